"""Scene normalisation (`--norm scene`, the default): tile consistency, the speed of the
default run against the original per-tile loop, and the statistics pass's cost and
memory (issue 22).

1. Consistency curve (`--samples`): on real scenes of several kinds without nodata
   (Landsat 8 crops of 49 and 64 tiles, Landsat 7, a WorldView-2 chip, two Sentinel-2
   patches; the RGBN aerial scene of tests/data has nodata, which the box metric cannot
   take; every scene cut to sides that are multiples of 4), the
   tiled `pipeline run` output of the demo model (trained, ngf 16) against the model's
   own forward of the whole scene as one tensor (per-image statistics = the scene's),
   both unit scale, 1 band: `pipeline.metrics.tile_consistency` (33 px box mean |diff|
   and correlation: tile-scale brightness; per-pixel mean |diff|), for `--norm tile`
   and `--norm scene` with each sample size (a size at or above the scene's tile count
   is one row, "all"). `--seeds`: other draws of the sample (norm_sample.SEED).
2. Speed with default options (`--norm scene`, default sample), seed-size light
   generator (ngf 64, 4 blocks, random weights): `run_scene` end to end on a 25-tile
   Landsat 8 crop and on the whole 110-tile Landsat 8 scene, fp32, fp32 + --compile and
   the fastest flags (bf16 + --compile; left out on a CPU without bf16 arithmetic,
   `cpu_has_bf16`), against the original loop's rate (batches of 8, fp32, torch's
   own threads, no pipeline) measured in the same process before and after (their mean
   is the reference: the machine is shared). Each option first runs a small warm-up
   scene in the same process (model load and compilation apart: `warmup_s`). Reported:
   tiles/s, the ratio, the statistics pass's seconds and share of the run, and the pass's
   rate against the rest of the run's (1.0: the pass costs nothing beyond its tiles'
   forwards, which are part of the output now).
3. Pass memory (`--memory-samples`): peak RSS added by the statistics pass of the
   seed-size model over S random 256 px tiles, in a fresh process each: the pooled pass
   (one forward per tile, 2 at a time, layer by layer) and, for reference, the one-forward
   pass of before (`collect_stats` of all S tiles at once).

    python -m benchmarks.bench_norm [--samples 4 8 16 24 32 48 64] [--seeds 0]
        [--speed-scenes 25 110] [--quick] [--out bench_out]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from benchmarks._common import DEFAULT_OUT, REPO, format_table, make_checkpoint, write_json
from pipeline.config import PipelineConfig, auto_norm_sample
from pipeline.inputs.radiometry import read_masked, to_model_input
from pipeline.metrics import tile_consistency
from pipeline.run import norm_sample
from pipeline.run.plan import SceneRequest, plan_scene
from pipeline.run.scene import run_scene
from pipeline.synthetic import crop_raster
from ugatit import load_checkpoint

DATA = REPO / "tests" / "data"
L8 = DATA / "l8_224078_parana_bgr_uint16.tif"
DEMO = REPO / "checkpoints" / "eo2sar_demo_ngf16.pt"
BOX = 33
S2_BEN = DATA / "sentinel1" / "bigearthnet" / "S2A_MSIL2A_20170613T101031_87_48"
S2_SSL = (DATA / "sentinel1" / "ssl4eo" / "s2a" / "0000200"
          / "20200604T054639_20200604T054831_T43RCP")

# name -> (source raster or band files, bands of the source, window or None). The L8
# windows lie inside the scene's largest collar-free square (1450 px at row 410, col 0).
SCENES: dict[str, tuple[Any, tuple[int, ...], Window | None]] = {
    "l8_1280 (49 tiles)": (L8, (3, 2, 1), Window(0, 480, 1280, 1280)),
    "l8_1440 (64 tiles)": (L8, (3, 2, 1), Window(0, 415, 1440, 1440)),
    "l7_olinda (4 tiles)": (DATA / "l7_olinda_6band_uint8.tif", (3, 2, 1), None),
    "sn6_wv2_rgb (1 tile)": (DATA / "sn6_rotterdam_eo_rgb.tif", (1, 2, 3), None),
    "s2_ssl4eo (4 tiles)": ([S2_SSL / f"B{b}.tif" for b in (4, 3, 2)], (1, 2, 3), None),
    "s2_bigearthnet (1 tile)": ([S2_BEN / f"{S2_BEN.name}_B0{b}.tif" for b in (4, 3, 2)],
                                (1, 2, 3), None),
    # The one real scene without nodata larger than 64 tiles of 256 px is not bundled
    # (the L8 scene's collar-free square is 1450 px): the 1440 px crop cut in 128 px
    # tiles (overlap 32: 225 tiles) stands in for a scene with more tiles than a sample.
    "l8_1440 @128 px (225 tiles)": (L8, (3, 2, 1), Window(0, 415, 1440, 1440)),
}
# tile size and overlap of a scene's runs when not the defaults (256 px)
TILING = {"l8_1440 @128 px (225 tiles)": {"tile_size": 128, "overlap": 32}}
QUICK_SCENES = ("l8_1280 (49 tiles)", "l7_olinda (4 tiles)", "s2_ssl4eo (4 tiles)")


# ---------------------------------------------------------------------------------------
# 1. consistency


def prepare_scene(name: str, tmp: Path) -> tuple[Path, tuple[int, ...]]:
    """The scene as a GeoTIFF whose sides are multiples of 4 (the whole-scene forward of
    the light generator needs them); the bands the run reads."""
    src, bands, window = SCENES[name]
    dst = tmp / (name.split()[0] + ("_128" if "@128" in name else "") + ".tif")
    if isinstance(src, list):  # Sentinel-2 band files of one grid: stack R, G, B
        with rasterio.open(src[0]) as ds:
            profile = ds.profile
        data = np.concatenate([rasterio.open(f).read() for f in src])
        profile.update(count=len(src), tiled=False)
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        stacked = tmp / "stack.tif"
        with rasterio.open(stacked, "w", **profile) as ds:
            ds.write(data)
        src = stacked
    with rasterio.open(src) as ds:
        w = window or Window(0, 0, ds.width, ds.height)
    w = Window(w.col_off, w.row_off, int(w.width) // 4 * 4, int(w.height) // 4 * 4)
    return crop_raster(src, dst, w), bands


def whole_scene_output(path: Path, bands: tuple[int, ...], model: Path) -> np.ndarray:
    """The generator's forward of the whole scene in one tensor (per-image statistics,
    i.e. the scene's), with the run's scaling; 1 band (mean of the model's out_ch),
    unit scale, as `run` writes."""
    config = PipelineConfig(bands=bands)
    _, job = plan_scene(SceneRequest(path, path.with_suffix(".unused.tif"), model, config),
                        check_output=False)
    with rasterio.open(path) as ds:
        data, valid = read_masked(ds, job.bands, nodata=job.nodata)
    x = torch.from_numpy(to_model_input(data, valid, job.scaling))[None]
    gen = load_checkpoint(model, networks=("genA2B",)).genA2B
    with torch.inference_mode():
        y = gen(x)[0][0].double().mean(0).numpy()
    return np.clip((y + 1) * 0.5, 0, 1)


def run(path: Path, out: Path, model: Path, **settings: Any) -> tuple[np.ndarray, Any]:
    config = PipelineConfig(**settings)
    result = run_scene(path, out, model_path=model, config=config, overwrite=True,
                       progress=False)
    with rasterio.open(out) as ds:
        return ds.read(1).astype(np.float64), result


@contextmanager
def sample_seed(seed: int) -> Iterator[None]:
    before = norm_sample.SEED
    norm_sample.SEED = seed
    try:
        yield
    finally:
        norm_sample.SEED = before


def consistency(model: Path, names: list[str], samples: list[int], seeds: list[int],
                tmp: Path) -> list[dict[str, Any]]:
    rows = []
    ngf = load_checkpoint(model, networks=("genA2B",)).genA2B.config.ngf
    for name in names:
        path, bands = prepare_scene(name, tmp)
        tiling = TILING.get(name, {})
        whole = whole_scene_output(path, bands, model)
        tiled, result = run(path, tmp / "tile.tif", model, bands=bands, norm="tile", **tiling)
        tiles = result.tiles_total
        rows.append({"scene": name, "tiles": tiles, "norm": "tile", "sample": None,
                     "seed": None, **tile_consistency(tiled, whole, BOX),
                     "pass_s": 0.0, "run_s": result.seconds})
        auto = auto_norm_sample(ngf, tiling.get("tile_size", 256))
        sizes = sorted({min(n, tiles) for n in [*samples, auto]})
        for n in sizes:
            for seed in (seeds if n < tiles else seeds[:1]):  # "all": one draw
                with sample_seed(seed):
                    tiled, result = run(path, tmp / "scene.tif", model, bands=bands,
                                        norm="scene", norm_sample=n, **tiling)
                label = f"all {n}" if n >= tiles else n
                rows.append({"scene": name, "tiles": tiles, "norm": "scene",
                             "sample": f"{label} (auto)" if n == min(auto, tiles) else label,
                             "seed": seed, **tile_consistency(tiled, whole, BOX),
                             "pass_s": result.norm_seconds, "run_s": result.seconds})
        print(format_table([r for r in rows if r["scene"] == name],
                           ["scene", "tiles", "norm", "sample", "seed", "box_mean_abs_diff",
                            "box_corr", "pixel_mean_abs_diff", "pass_s", "run_s"]),
              flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# 2. speed: the default run against the original loop


def original_loop_rate(model: Path, seconds: float) -> float:
    """Tiles/s of the original code's loop: batches of 8 random 256 px tiles, fp32,
    torch's own intra-op threads (all cores), one forward after another."""
    from benchmarks.bench_speed import cores, rate

    gen = load_checkpoint(model, networks=("genA2B",)).genA2B
    c = gen.config.in_ch
    x = torch.rand(8, c, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = torch.get_num_threads()
    torch.set_num_threads(cores())

    def step() -> int:
        with torch.no_grad():
            gen(x)
        return 8

    try:
        return rate(step, seconds, torch.device("cpu"))
    finally:
        torch.set_num_threads(before)


AUTO_SEED = auto_norm_sample(64, 256)  # the default sample of the seed-size speed model
VARIANTS = {"fp32": {}, "fp32 + compile": {"compile": True},
            "fastest (bf16 + compile)": {"precision": "bf16", "compile": True}}


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic (AVX512-BF16 or AMX): without it torch
    emulates bf16, ~100x slower than fp32 (ngf 16: 34 s a tile against 0.36 s on an
    AVX2-only EPYC), and the fastest flags are fp32 + compile."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: let the rows say
    return "avx512_bf16" in flags or "amx_bf16" in flags


def speed(model: Path, scene_tiles: list[int], seconds: float, tmp: Path,
          variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    scenes = {25: (Window(0, 480, 1024, 1024), "l8 crop 1024 px"),
              110: (None, "l8 whole scene 2041 x 1860 (zero collar)"),
              9: (Window(0, 480, 640, 640), "l8 crop 640 px")}
    warm = crop_raster(L8, tmp / "warm.tif", Window(0, 480, 512, 512))
    paths = {}
    for n in scene_tiles:
        window, label = scenes[n]
        paths[n] = (L8 if window is None else crop_raster(L8, tmp / f"s{n}.tif", window),
                    label)
    before = original_loop_rate(model, seconds)
    print(f"original loop: {before:.3f} tiles/s", flush=True)
    rows = []
    for vname, options in variants.items():
        t0 = time.perf_counter()
        run(warm, tmp / "warm_out.tif", model, bands=(3, 2, 1), **options)
        warmup = time.perf_counter() - t0
        for path, label in paths.values():
            _, res = run(path, tmp / "speed_out.tif", model, bands=(3, 2, 1), **options)
            sample = min(AUTO_SEED, res.tiles_run)
            rest_s = res.seconds - res.norm_seconds
            rest_rate = (res.tiles_run - sample) / rest_s if res.tiles_run > sample else None
            pass_rate = sample / res.norm_seconds if res.norm_seconds else None
            rows.append({
                "variant": vname, "scene": label, "tiles_run": res.tiles_run,
                "seconds": res.seconds, "tiles_per_s": res.tiles_run / res.seconds,
                "pass_s": res.norm_seconds, "pass_share": res.norm_seconds / res.seconds,
                "pass_tiles": sample,
                "pass_rate_vs_rest": (pass_rate / rest_rate) if pass_rate and rest_rate
                else None,
                "warmup_s": warmup})
            print(format_table(rows[-1:]), flush=True)
    after = original_loop_rate(model, seconds)
    print(f"original loop: {after:.3f} tiles/s", flush=True)
    reference = (before + after) / 2
    for r in rows:
        r["vs_original_loop"] = r["tiles_per_s"] / reference
    return {"original_loop_tiles_per_s": [before, after], "rows": rows,
            "sample": AUTO_SEED}


# ---------------------------------------------------------------------------------------
# 3. memory of the pass


def _peak_kib() -> int:
    """This process's peak RSS since the last `_reset_peak` (VmHWM; getrusage's maxrss
    where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return _peak_kib()


def _reset_peak() -> None:
    """Reset the peak RSS to the current one (Linux: clear_refs 5), so that a warm-up's
    peak (one tile's forward with its temporaries) does not hide the pass's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def pass_memory_child(samples: int, how: str, ngf: int) -> dict[str, Any]:
    """In this (fresh) process: peak RSS added by one statistics pass of `samples`
    random tiles through a seed-size generator, and its seconds."""
    from pipeline.run.inference import pass_workers, pin_threads
    from ugatit import ModelConfig
    from ugatit.networks import build_network

    pin_threads("cpu")
    torch.manual_seed(0)
    gen = build_network("genA2B", ModelConfig(ngf=ngf, n_res=4)).eval()
    x = torch.rand(samples, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        gen(x[:1])  # allocator and kernels warm
    _reset_peak()
    base = _rss_kib()  # the baseline: resident memory before the pass
    t0 = time.perf_counter()
    with torch.inference_mode():
        if how == "pooled":
            gen.pooled_forward([x[i : i + 1] for i in range(samples)],
                               workers=pass_workers("cpu"),
                               context=torch.inference_mode)
        else:
            gen.collect_stats(x)  # the whole sample in one forward, as before
    seconds = time.perf_counter() - t0
    return {"how": how, "samples": samples, "ngf": ngf,
            "pass_peak_gib": (_peak_kib() - base) / 2**20, "seconds": seconds}


def pass_memory(samples: list[int], ngf: int) -> list[dict[str, Any]]:
    rows = []
    cases = [(n, "pooled") for n in samples] + [(min(samples[0], 16), "one forward (before)")]
    for n, how in cases:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_norm", "--memory-child", str(n),
             "pooled" if how == "pooled" else "one", str(ngf)],
            cwd=REPO, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["how"] = how
        rows.append(row)
        print(format_table(rows[-1:]), flush=True)
    return rows


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--memory-child"]:
        n, how, ngf = int(argv[1]), argv[2], int(argv[3])
        print(json.dumps(pass_memory_child(n, "pooled" if how == "pooled" else "one", ngf)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEMO, help="consistency: the model")
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 32, 48, 64, 128])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--scenes", nargs="*", default=list(SCENES), choices=list(SCENES),
                    help="consistency scenes (none: skip the section)")
    ap.add_argument("--speed-scenes", type=int, nargs="*", default=[25, 110],
                    choices=[9, 25, 110], help="tiles of the speed scenes (none: skip)")
    ap.add_argument("--seconds", type=float, default=20.0, help="original loop timing")
    ap.add_argument("--ngf", type=int, default=64, help="speed and memory model width")
    ap.add_argument("--memory-samples", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--no-compile", action="store_true", help="speed: fp32 only")
    ap.add_argument("--quick", action="store_true",
                    help="3 scenes, samples 4/16/all, ngf 16, 9-tile speed scene, fp32: "
                    "a smoke run")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.scenes = list(QUICK_SCENES)
        args.samples, args.seeds = [4, 16, 64], [0]
        args.speed_scenes, args.seconds, args.ngf = [9], 3.0, 16
        args.memory_samples, args.no_compile = [8], True
    variants = {k: v for k, v in VARIANTS.items()
                if not (args.no_compile and v.get("compile"))
                and (v.get("precision") != "bf16" or cpu_has_bf16())}
    doc: dict[str, Any] = {"model": args.model.name, "box": BOX,
                           "default_sample": "auto (auto_norm_sample: the model's width)"}
    with tempfile.TemporaryDirectory(prefix="eo2sar_norm_") as tmp_name:
        tmp = Path(tmp_name)
        if args.scenes:
            print(f"== consistency: tiled run vs whole-scene forward, {args.model.name}, "
                  f"unit scale, box {BOX} px", flush=True)
        doc["rows"] = consistency(args.model, args.scenes, args.samples, args.seeds, tmp)
        if args.speed_scenes:
            model = make_checkpoint(tmp / f"ngf{args.ngf}.pt", ngf=args.ngf, n_res=4)
            print(f"\n== speed, default options (--norm scene, sample "
                  f"auto = {auto_norm_sample(args.ngf, 256)}), ngf {args.ngf}, vs the original "
                  "loop", flush=True)
            doc["speed"] = {"ngf": args.ngf, **speed(model, args.speed_scenes, args.seconds,
                                                      tmp, variants)}
    if args.memory_samples:
        print(f"\n== statistics pass peak memory, ngf {args.ngf}", flush=True)
        doc["memory"] = pass_memory(args.memory_samples, args.ngf)
    if doc["rows"]:
        print("\nConsistency:")
        print(format_table(doc["rows"], ["scene", "norm", "sample", "seed",
                                         "box_mean_abs_diff", "box_corr",
                                         "pixel_mean_abs_diff"]))
    if "speed" in doc:
        print("\nSpeed vs the original loop "
              f"({', '.join(f'{r:.3f}' for r in doc['speed']['original_loop_tiles_per_s'])}"
              " tiles/s before/after)")
        print(format_table(doc["speed"]["rows"], ["variant", "scene", "tiles_run", "seconds",
                                                  "tiles_per_s", "vs_original_loop",
                                                  "pass_s", "pass_share",
                                                  "pass_rate_vs_rest", "warmup_s"]))
    if "memory" in doc:
        print("\nStatistics pass memory")
        print(format_table(doc["memory"]))
    path = write_json(args.out, "norm", doc)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
