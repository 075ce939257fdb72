"""translate on a Dask array against `pipeline run` on the same scene (issue 24).

Why: `pipeline.translate` (pipeline/run/arrays.py) builds its own Dask graph (a
statistics task per time step, a tile task and a blend per output chunk) instead of
`run_scene`'s bounded batch windows and one writer; this measures what that costs, end
to end, on the bundled Landsat 8 scene (2041 x 1860 px, 110 tiles of 256 px) with the
demo model, and checks the pixels are the same bytes:

  pipeline run     run_scene(scene.tif, out.tif): plan, statistics, tiles, blend, COG
  translate        translate(rioxarray.open_rasterio(scene.tif, chunks=C), ...).compute()
  translate + COG  the same, then .rio.to_raster(..., driver="COG") (a file, like run)

Both use the threaded scheduler with one thread per core and the same settings. Runs
alternate and each is repeated; the best of each is compared (a shared machine's load
only ever slows a run down). Two numbers, one meaning: `time_vs_run` = translate's best
time / pipeline run's (below 1.0: translate is faster) and `speed_vs_run` = pipeline
run's time / translate's, the issue's "translate speed / run speed >= 0.9" (not slower
by more than 10 %). (`ratio_vs_run` / `ratio` in older JSON were the time ratio.)

    python -m benchmarks.bench_xarray [--repeats 3] [--chunks 1024] [--quick]
    python -m benchmarks.bench_xarray --memory-size 16384   # peak RSS instead (below)

`--memory-size N`: an N x N lazy Dask array of noise (3 bands, uint16, 1024 px chunks),
never held whole, through `translate` (random ngf 4 model, --norm scene) and written
chunk by chunk to a tiled GeoTIFF with `rio.to_raster(..., lock=...)`: the peak RSS of
this process against the 2 GiB target of bench_memory.py (`pipeline run`'s bound), and
against the 4096 px run's peak in the same --out folder when there is one (DESIGN.md:
a 16k scene within 1.2x of a 4k scene's peak).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from benchmarks._common import DEFAULT_OUT, REPO, format_table, write_json

SCENE = REPO / "tests" / "data" / "l8_224078_parana_bgr_uint16.tif"
MODEL = REPO / "checkpoints" / "eo2sar_demo_ngf16.pt"


def _pipeline_run(scene: Path, out: Path, settings: dict[str, Any]) -> tuple[float, np.ndarray]:
    from pipeline import load_config, run_scene

    t0 = time.perf_counter()
    run_scene(scene, out, model_path=MODEL, config=load_config(None, settings),
              progress=False, write_stac=False, overwrite=True)
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as ds:
        return seconds, ds.read()


def _translate(scene: Path, out: Path | None, settings: dict[str, Any], chunks: int
               ) -> tuple[float, np.ndarray]:
    import rioxarray

    from pipeline import translate

    options = {k: v for k, v in settings.items() if k != "bands"}
    t0 = time.perf_counter()
    data = rioxarray.open_rasterio(scene, chunks=chunks)
    result = translate(data, MODEL, bands=settings["bands"], **options)
    if out is None:
        values = result.compute().values
        return time.perf_counter() - t0, values
    result.rio.to_raster(out, driver="COG")
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as ds:
        return seconds, ds.read()


def memory(size: int, out_dir: Path) -> int:
    """Peak RSS of translate computing a size x size lazy array chunk by chunk."""
    import resource
    import threading

    import dask.array as da
    import rioxarray  # noqa: F401 - the .rio accessor
    import xarray as xr

    from benchmarks._common import make_checkpoint
    from pipeline import translate
    from pipeline.run.tiling import TileGrid

    with tempfile.TemporaryDirectory(prefix="eo2sar-bench-xarray-mem-") as tmp:
        ckpt = make_checkpoint(Path(tmp) / "ngf4.pt", ngf=4)
        noise = da.random.default_rng(0).integers(
            1, 4000, size=(3, size, size), chunks=(3, 1024, 1024)).astype(np.uint16)
        data = xr.DataArray(noise, dims=("band", "y", "x"))
        t0 = time.perf_counter()
        out = translate(data, ckpt)
        out.rio.to_raster(Path(tmp) / "out.tif", tiled=True, lock=threading.Lock())
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    tiles = TileGrid(size, size, 256, 64).count
    rows = [{"size": size, "peak_rss_gib": peak, "target_gib": 2.0, "wall_s": seconds,
             "tiles_per_s": tiles / seconds}]
    print(format_table(rows))
    extra: dict[str, Any] = {"tiles": tiles, "within_target": peak <= 2.0,
                             "model": "random ngf 4, n_res 1"}
    base = out_dir / "xarray_memory_4096.json"
    if size != 4096 and base.exists():
        extra["peak_vs_4096"] = peak / json.loads(base.read_text())["peak_rss_gib"]
    path = write_json(out_dir, f"xarray_memory_{size}", {**rows[0], **extra})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", type=int, default=1024)
    p.add_argument("--quick", action="store_true", help="a 768 x 640 crop, 2 repeats")
    p.add_argument("--memory-size", type=int, default=0,
                   help="measure peak RSS on a lazy N x N array instead")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.memory_size:
        return memory(args.memory_size, args.out)
    settings: dict[str, Any] = {"bands": (3, 2, 1)}
    with tempfile.TemporaryDirectory(prefix="eo2sar-bench-xarray-") as tmp:
        tmp_path = Path(tmp)
        scene = SCENE
        if args.quick:
            from rasterio.windows import Window

            from pipeline.synthetic import crop_raster

            scene = crop_raster(SCENE, tmp_path / "crop.tif", Window(600, 600, 768, 640))
            args.repeats = min(args.repeats, 2)
        with rasterio.open(scene) as ds:
            width, height = ds.width, ds.height
        # one untimed run of each loads the model and warms the file cache
        _pipeline_run(scene, tmp_path / "warm.tif", settings)
        _translate(scene, None, settings, args.chunks)
        times: dict[str, list[float]] = {"pipeline run": [], "translate": [],
                                         "translate + COG": []}
        same = True
        for _ in range(args.repeats):
            s, ref = _pipeline_run(scene, tmp_path / "run.tif", settings)
            times["pipeline run"].append(s)
            s, arr = _translate(scene, None, settings, args.chunks)
            times["translate"].append(s)
            same &= bool(np.array_equal(arr, ref, equal_nan=True))
            s, cog = _translate(scene, tmp_path / "xr.tif", settings, args.chunks)
            times["translate + COG"].append(s)
            same &= bool(np.array_equal(cog, ref, equal_nan=True))
    base = min(times["pipeline run"])
    rows = [{"path": name, "best_s": min(v), "runs_s": " ".join(f"{x:.2f}" for x in v),
             "time_vs_run": min(v) / base, "speed_vs_run": base / min(v)}
            for name, v in times.items()]
    print(f"{width} x {height} px, chunks {args.chunks}, demo model, best of {args.repeats}")
    print(format_table(rows, ["path", "best_s", "time_vs_run", "speed_vs_run", "runs_s"]))
    print(f"same pixels as pipeline run: {same}")
    path = write_json(args.out, "xarray", {
        "scene": str(scene.name), "width": width, "height": height, "chunks": args.chunks,
        "repeats": args.repeats, "same_pixels": same, "rows": rows,
        "speed_vs_run": rows[1]["speed_vs_run"],
        "speed_vs_run_with_cog": rows[2]["speed_vs_run"],
        "meets_0_9": rows[1]["speed_vs_run"] >= 0.9,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
