"""Scene normalisation (`--norm scene|tile`): tile consistency and the cost of the
statistics pass.

1. Consistency: the tiled `pipeline run` output against the model's own whole-image
   forward (light generator, per-image statistics, the scene as one tensor), on a crop of
   the Landsat 8 test scene without nodata (the scene has a zero collar). Both in unit
   scale, 1 band; `pipeline.metrics.tile_consistency`: box-filtered over 33 px (tile-scale
   brightness) mean |difference| and correlation, and the per-pixel mean |difference|.
   `--norm tile` (each tile its own statistics) against `--norm scene` for several
   `--norm-sample` sizes.
2. Cost: the statistics pass (`SceneResult.norm_seconds`: one forward of the sample at
   once) as a fraction of the whole scene run, on the full Landsat 8 scene
   (2041 x 1860, 110 tiles, zero collar), bands 3,2,1, and a synthetic `--cost-size`
   scene (4096 px: 441 tiles; a full Landsat scene has ~1700); and per tile on one thread, the
   statistics pass against the run's forwards of one tile each. The pass runs on one
   core (pinned like every CPU forward, for the same bytes) while the run's tiles use
   every core, so its share of a scene is ~ sample x ratio / (tiles / cores).

    python -m benchmarks.bench_norm [--model checkpoints/eo2sar_demo_ngf16.pt]
                                    [--samples 4 8 16 24 32] [--quick] [--out bench_out]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from benchmarks._common import DEFAULT_OUT, REPO, format_table, write_json
from pipeline.config import DEFAULT_NORM_SAMPLE, PipelineConfig
from pipeline.inputs.radiometry import read_masked, to_model_input
from pipeline.metrics import tile_consistency
from pipeline.run.plan import SceneRequest, plan_scene
from pipeline.run.scene import run_scene
from pipeline.synthetic import crop_raster, write_synthetic_scene
from ugatit import load_checkpoint

L8 = REPO / "tests" / "data" / "l8_224078_parana_bgr_uint16.tif"
BANDS = (3, 2, 1)
CROP = (0, 352, 1152, 1152)  # col, row, width, height: every pixel valid (no collar)
QUICK_CROP = (600, 500, 512, 512)
BOX = 33


def whole_image_output(path: Path, model: Path, config: PipelineConfig) -> np.ndarray:
    """The light generator's forward of the whole image in one tensor (per-image
    statistics, i.e. the scene's), with the run's scaling; 1 band, unit scale."""
    plan, job = plan_scene(SceneRequest(path, path.with_suffix(".unused.tif"), model, config),
                           check_output=False)
    with rasterio.open(path) as ds:
        data, valid = read_masked(ds, BANDS, nodata=config.nodata)
    x = torch.from_numpy(to_model_input(data, valid, job.scaling))[None]
    gen = load_checkpoint(model, networks=("genA2B",)).genA2B
    with torch.inference_mode():
        y = gen(x)[0][0].double().mean(0).numpy()
    return np.clip((y + 1) * 0.5, 0, 1)


def run(path: Path, out: Path, model: Path, **settings: Any) -> tuple[np.ndarray, Any]:
    config = PipelineConfig(**{"bands": BANDS, "nodata": 0, **settings})
    result = run_scene(path, out, model_path=model, config=config, overwrite=True,
                       progress=False)
    with rasterio.open(out) as ds:
        return ds.read(1).astype(np.float64), result


def consistency(model: Path, samples: list[int], crop: tuple[int, int, int, int],
                tmp: Path) -> list[dict[str, Any]]:
    src = crop_raster(L8, tmp / "crop.tif", Window(*crop))
    whole = whole_image_output(src, model, PipelineConfig(bands=BANDS, nodata=0))
    rows = []
    for mode, n in [("tile", 0), *(("scene", n) for n in samples)]:
        settings = {"norm": mode} | ({"norm_sample": n} if n else {})
        tiled, result = run(src, tmp / f"{mode}_{n}.tif", model, **settings)
        rows.append({"norm": mode, "sample": n or None, **tile_consistency(tiled, whole, BOX),
                     "stats_s": result.norm_seconds, "run_s": result.seconds})
    return rows


def cost(model: Path, sample: int, tmp: Path, path: Path, bands: tuple[int, ...] = BANDS
         ) -> dict[str, Any]:
    t0 = time.perf_counter()
    _, result = run(path, tmp / "cost.tif", model, bands=bands, norm="scene",
                    norm_sample=sample)
    return {"scene": path.name, "tiles": result.tiles_total, "sample": sample,
            "stats_s": result.norm_seconds, "run_s": time.perf_counter() - t0,
            "stats_fraction": result.norm_seconds / result.seconds}


def per_tile_seconds(model: Path, n: int, tile: int = 256) -> dict[str, Any]:
    """Seconds per tile, one intra-op thread (as the pipeline runs on CPU): tiles
    forwarded alone (the run) against the statistics pass (n tiles in one forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    gen = load_checkpoint(model, networks=("genA2B",)).genA2B
    x = torch.rand(n, 3, tile, tile, generator=torch.Generator().manual_seed(0)) * 2 - 1
    try:
        with torch.inference_mode():
            gen(x[:1])  # warm-up
            t0 = time.perf_counter()
            for i in range(n):
                gen(x[i : i + 1])
            alone = (time.perf_counter() - t0) / n
            t0 = time.perf_counter()
            gen.collect_stats(x)
            pooled = (time.perf_counter() - t0) / n
    finally:
        torch.set_num_threads(before)
    return {"tiles": n, "forward_alone_s_per_tile": alone,
            "stats_pass_s_per_tile": pooled, "ratio": pooled / alone}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "checkpoints" / "eo2sar_demo_ngf16.pt")
    ap.add_argument("--samples", type=int, nargs="+", default=[4, 8, 16, 24, 32])
    ap.add_argument("--quick", action="store_true",
                    help="512 px crop, samples 4 and 16, cost on the crop: a smoke run")
    ap.add_argument("--cost-size", type=int, default=4096,
                    help="also time a synthetic scene of this size (px), a larger scene's "
                    "share of the pass; 0: none")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    samples = [4, DEFAULT_NORM_SAMPLE] if args.quick else args.samples
    crop = QUICK_CROP if args.quick else CROP
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = consistency(args.model, samples, crop, tmp)
        cost_scene = tmp / "crop.tif" if args.quick else L8
        costs = [cost(args.model, DEFAULT_NORM_SAMPLE, tmp, cost_scene)]
        if args.cost_size and not args.quick:
            big = write_synthetic_scene(tmp / f"synthetic_{args.cost_size}.tif",
                                        args.cost_size, dtype="uint16")
            costs.append(cost(args.model, DEFAULT_NORM_SAMPLE, tmp, big, bands=(1, 2, 3)))
    per_tile = per_tile_seconds(args.model, 4 if args.quick else DEFAULT_NORM_SAMPLE)
    print(f"Tile consistency: tiled run vs whole-image forward, L8 crop {crop[2]} x "
          f"{crop[3]} px, {args.model.name} (unit scale, box {BOX} px)")
    print(format_table(rows))
    print("\nCost of the statistics pass (--norm scene, default sample)")
    print(format_table(costs))
    print("\nPer tile, one thread: alone (the run's forwards) vs the statistics pass")
    print(format_table([per_tile]))
    path = write_json(args.out, "norm", {"model": args.model.name, "crop": list(crop),
                                         "box": BOX, "rows": rows, "cost": costs,
                                         "per_tile": per_tile})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
