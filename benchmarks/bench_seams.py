"""Seams against overlap: the seam ratio of the output for overlap 0, 32, 64, 96.

U-GAT-IT normalises each tile with its own statistics, so tiles disagree and pasted
tiles show seams; overlapping tiles cross-faded by the blend window hide them. This runs
the real scene pipeline (``pipeline.run.scene.run_scene``) with a random-weight narrow model
(the worst case: untrained per-tile normalisation is not pulled towards any common
"look") on real rasters and reports, per overlap, the seam ratio of the 1-band output
(``pipeline.metrics.seam_ratio``: mean |step| across tile-edge lines / elsewhere;
1.0 = no visible seam; "local": against the lines within 8 px of a tile edge only, which
removes most of the content-driven spread) and the cost relative to no overlap (tiles
and seconds). The
"input" row is the seam ratio of the input itself on the same grid: the metric's floor
for that image (real images are not exactly 1.0 on any grid).

Data (copies in tests/data, see tests/data/README.md for provenance):
  l8    Landsat 8 Parana, bands 3,2,1 (R,G,B), 1024 x 1024 crop away from the collar,
        tile 256;
  pan   SpaceNet 6 WorldView-2 pan, 600 x 600 uint16, bands 1,1,1, tile 256;
  sn6   SpaceNet 6 RGB chip, 200 x 200: smaller than one 256 px tile, so it runs at tile
        64 with the overlaps scaled by the same fraction (0, 8, 16, 24 = 0, 1/8, 1/4, 3/8
        of the tile).

    python -m benchmarks.bench_seams [--ngf 4] [--seeds 0 1 2] [--cases l8 pan sn6]
                                     [--norm tile|scene]

Runs with `--norm tile` unless asked: per-tile normalisation is what the overlap has to
hide, and the recorded numbers were measured so (`--norm scene`, the default of `pipeline
run`, removes most of the disagreement in the first place: docs/pipeline.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from benchmarks._common import DEFAULT_OUT, REPO, format_table, make_checkpoint, write_json
from pipeline.synthetic import crop_raster

DATA = REPO / "tests" / "data"
OVERLAP_FRACTIONS = (0.0, 0.125, 0.25, 0.375)  # 0, 32, 64, 96 of 256
NEAR = 8  # px: the "local" ratio's reference lines (see seam_ratio's `near`)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    tile: int
    bands: tuple[int, ...] | None
    nodata: float | None
    crop: tuple[int, int, int, int] | None  # col, row, width, height


CASES = [
    Case("l8", DATA / "l8_224078_parana_bgr_uint16.tif", 256, (3, 2, 1), 0.0,
         (500, 400, 1024, 1024)),
    Case("pan", DATA / "sn6_rotterdam_wv2_pan_uint16.tif", 256, (1, 1, 1), None, None),
    Case("sn6", DATA / "sn6_rotterdam_eo_rgb.tif", 64, None, None, None),
]


def _read_band1(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import rasterio

    with rasterio.open(path) as ds:
        a = ds.read(1, masked=True)
    return np.ma.getdata(a).astype(np.float64), ~np.ma.getmaskarray(a)


def _input_grey(path: Path, bands: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    import rasterio

    with rasterio.open(path) as ds:
        idx = list(bands) if bands else [1, 2, 3]
        a = ds.read(idx, masked=True).astype(np.float64)
    return np.ma.getdata(a.mean(axis=0)), ~np.ma.getmaskarray(a).any(axis=0)


def run_case(case: Case, ckpt: Path, work: Path, norm: str = "tile") -> list[dict[str, Any]]:
    from pipeline.config import PipelineConfig
    from pipeline.metrics import seam_ratio
    from pipeline.run.scene import run_scene

    scene = case.path
    if case.crop is not None:
        scene = crop_raster(case.path, work / f"{case.name}_crop.tif", Window(*case.crop),
                                tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    grey, valid = _input_grey(scene, case.bands)
    rows: list[dict[str, Any]] = []
    base_tiles = base_s = None
    # warm-up: the process's first run_scene loads the model and warms oneDNN; untimed
    run_scene(scene, work / f"{case.name}_warmup.tif", model_path=ckpt, overwrite=True,
              config=PipelineConfig(tile_size=case.tile, bands=case.bands,
                                    nodata=case.nodata, overlap=0, norm=norm),
              progress=False)
    for frac in OVERLAP_FRACTIONS:
        overlap = int(round(frac * case.tile))
        cfg = PipelineConfig(tile_size=case.tile, overlap=overlap, bands=case.bands,
                             nodata=case.nodata, norm=norm)
        out = work / f"{case.name}_{ckpt.stem}_o{overlap}.tif"
        t0 = time.perf_counter()
        res = run_scene(scene, out, model_path=ckpt, config=cfg, overwrite=True,
                        progress=False)
        seconds = time.perf_counter() - t0
        arr, ok = _read_band1(out)
        if base_tiles is None:
            base_tiles, base_s = res.tiles_run, seconds
        rows.append({
            "data": case.name,
            "norm": norm,
            "size": f"{res.width}x{res.height}",
            "tile": case.tile,
            "overlap": overlap,
            "tiles": res.tiles_run,
            "seam_ratio": seam_ratio(arr, case.tile, overlap, valid=ok),
            "seam_local": seam_ratio(arr, case.tile, overlap, valid=ok, near=NEAR),
            "input_ratio": seam_ratio(grey, case.tile, overlap, valid=valid),
            "input_local": seam_ratio(grey, case.tile, overlap, valid=valid, near=NEAR),
            "rel_tiles": res.tiles_run / base_tiles,
            "rel_seconds": seconds / base_s,
            # on a scene much larger than a tile the tile count grows as (tile/stride)^2
            "rel_tiles_large": (case.tile / (case.tile - overlap)) ** 2,
            "seconds": seconds,
        })
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ngf", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="random-weight models to average over (one row set per seed)")
    p.add_argument("--cases", nargs="+", default=[c.name for c in CASES],
                   choices=[c.name for c in CASES])
    p.add_argument("--norm", choices=("tile", "scene"), default="tile",
                   help="normalisation statistics: tile (each tile its own, the worst case "
                   "the overlap must hide, as measured in the docs) or scene")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="eo2sar_seams_") as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            ckpt = make_checkpoint(work / f"ngf{args.ngf}_s{seed}.pt", ngf=args.ngf, n_res=1,
                                   seed=seed)
            for case in CASES:
                if case.name in args.cases:
                    rows += [{"seed": seed, **r} for r in run_case(case, ckpt, work, args.norm)]
    cols = ["data", "size", "seed", "tile", "overlap", "tiles", "seam_ratio", "seam_local",
            "input_ratio", "input_local",
            "rel_tiles", "rel_seconds", "rel_tiles_large"]
    print(format_table(rows, cols))
    path = write_json(args.out, "seams", {"ngf": args.ngf, "n_res": 1, "rows": rows})
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
