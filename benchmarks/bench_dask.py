"""Scale-out: a directory of synthetic scenes through 1 vs 2 local Dask worker processes.

Why: `--workers N` / `--scheduler` spread the batch tasks of every scene over worker
processes (pipeline/run/scheduling.py); this measures what a second worker buys on this
machine, end to end (reading, inference, the client's blend and COG writing, which stay
in one process), and checks the two runs wrote the same bytes. The cluster's start is
timed apart (it is paid once per command, not per scene); the run includes each worker's
one model load.

    python -m benchmarks.bench_dask [--scenes 4] [--size 1024] [--ngf 16] [--quick]

Ratios are only meaningful on a machine with at least as many free cores as workers:
on a shared machine the second worker competes with the other jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import rasterio

from benchmarks._common import DEFAULT_OUT, format_table, make_checkpoint, write_json
from pipeline.synthetic import write_synthetic_scene


def _pixels_digest(paths: list[Path]) -> str:
    """sha256 of the output arrays, in order (provenance tags hold times: not compared)."""
    h = hashlib.sha256()
    for p in paths:
        with rasterio.open(p) as ds:
            h.update(ds.read().tobytes())
    return h.hexdigest()


def run_with_workers(scenes: Path, out: Path, ckpt: Path, workers: int) -> dict[str, Any]:
    """One directory run on a fresh LocalCluster of `workers` processes x 1 thread."""
    import io

    from pipeline import load_config
    from pipeline.run.batch import run_directory
    from pipeline.run.scheduling import scheduler_client

    config = load_config(None, {"workers": workers})
    t0 = time.perf_counter()
    with scheduler_client(config, None) as client:
        client.wait_for_workers(workers, timeout=60)
        started = time.perf_counter()
        report = run_directory(scenes, out, model_path=ckpt, config=config, quiet=True,
                               client=client, stream=io.StringIO())
        seconds = time.perf_counter() - started
    tiles = sum(s.tiles_run or 0 for s in report.scenes)
    outputs = sorted(out.glob("*.tif"))
    return {
        "workers": workers, "scenes": len(report.done), "failed": len(report.failed),
        "tiles": tiles, "cluster_start_s": started - t0, "run_s": seconds,
        "tiles_per_s": tiles / seconds if seconds > 0 else float("nan"),
        "digest": _pixels_digest(outputs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--size", type=int, default=1024, help="px of each square scene")
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="512 px scenes, ngf 4: a smoke run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    size, ngf = (512, 4) if args.quick else (args.size, args.ngf)

    rows = []
    with tempfile.TemporaryDirectory(prefix="eo2sar_bench_dask_") as tmp:
        work = Path(tmp)
        scenes = work / "scenes"
        scenes.mkdir()
        for i in range(args.scenes):
            write_synthetic_scene(scenes / f"s{i}.tif", size, seed=i)
        ckpt = make_checkpoint(work / f"ngf{ngf}.pt", ngf=ngf)
        for n in args.workers:
            rows.append(run_with_workers(scenes, work / f"out{n}", ckpt, n))
    base = rows[0]["tiles_per_s"]
    for r in rows:
        r["ratio_vs_first"] = r["tiles_per_s"] / base
        r["same_pixels_as_first"] = r["digest"] == rows[0]["digest"]
    print(format_table(rows, ["workers", "scenes", "tiles", "cluster_start_s", "run_s",
                              "tiles_per_s", "ratio_vs_first", "same_pixels_as_first"]))
    result = {"scenes": args.scenes, "size": size, "ngf": ngf, "rows": rows}
    path = write_json(args.out, "dask", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
