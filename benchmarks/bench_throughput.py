"""Throughput on CPU: tiles/s of the generator for batch sizes 1, 4, 8 (ngf 4 and 16).

Why: the pipeline forwards tiles one at a time on CPU (pipeline/run/inference.py: bit-identical
outputs whatever the batch size, parallelism from Dask threads with torch pinned to one
thread each). This measures what that costs against batching, in two settings:

  model, threads=T   one forward of a [B, 3, 256, 256] batch with torch using T threads
                     (T = all cores: torch's own parallelism)
  model, threads=1   the same with one torch thread (what each Dask thread does)
  pipeline           ``run_scene`` end to end on a synthetic scene with ``batch_size`` B
                     (on CPU it only changes the task granularity)

Every figure is a ratio against batch 1 of the same setting, measured in the same run on
the same machine: absolute tiles/s depend on the CPU, ratios much less.

    python -m benchmarks.bench_throughput [--ngf 4 16] [--batches 1 4 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DEFAULT_OUT, format_table, make_checkpoint, write_json
from pipeline.synthetic import write_synthetic_scene


def _time_forward(gen: Any, batch: int, tile: int, seconds: float) -> tuple[float, int]:
    """tiles/s of gen on random [batch, 3, tile, tile] inputs, after one warm-up call."""
    import torch

    x = torch.rand(batch, 3, tile, tile, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        gen(x)  # warm-up: oneDNN primitive creation, allocator
        n = 0
        t0 = time.perf_counter()
        while True:
            gen(x)
            n += batch
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and n >= 2 * batch:
                break
    return n / elapsed, n


def bench_model(ckpt: Path, batches: list[int], tile: int, threads: int, seconds: float
                ) -> list[dict[str, Any]]:
    import torch

    from ugatit import load_checkpoint

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = load_checkpoint(ckpt, networks=("genA2B",)).genA2B
        rows = []
        for b in batches:
            tps, n = _time_forward(gen, b, tile, seconds)
            rows.append({"batch": b, "tiles": n, "tiles_per_s": tps})
    finally:
        torch.set_num_threads(before)
    base = rows[0]["tiles_per_s"]
    for r in rows:
        r["ratio_vs_b1"] = r["tiles_per_s"] / base
    return rows


def bench_pipeline(ckpt: Path, scene: Path, batches: list[int], work: Path
                   ) -> list[dict[str, Any]]:
    from pipeline.config import PipelineConfig
    from pipeline.run.scene import run_scene

    # warm-up run: the first run_scene of a process loads the model (cached per process
    # afterwards) and warms oneDNN; without it batch 1, measured first, would pay for both
    run_scene(scene, work / "pipe_warmup.tif", model_path=ckpt,
              config=PipelineConfig(batch_size=batches[0], norm="tile"), overwrite=True,
              progress=False)
    rows = []
    for b in batches:
        out = work / f"pipe_b{b}.tif"
        # --norm tile: tiles/s of the tile path (the per-scene statistics pass of the
        # default --norm scene is benchmarks/bench_norm.py's)
        cfg = PipelineConfig(batch_size=b, norm="tile")
        t0 = time.perf_counter()
        res = run_scene(scene, out, model_path=ckpt, config=cfg, overwrite=True,
                        progress=False)
        dt = time.perf_counter() - t0
        rows.append({"batch": b, "tiles": res.tiles_run, "seconds": dt,
                     "tiles_per_s": res.tiles_run / dt})
    base = rows[0]["tiles_per_s"]
    for r in rows:
        r["ratio_vs_b1"] = r["tiles_per_s"] / base
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ngf", type=int, nargs="+", default=[4, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timing per point")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the 'model, threads=T' setting")
    p.add_argument("--scene-size", type=int, default=1024,
                   help="synthetic scene for the pipeline setting; 0 skips it")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    batches = sorted(set(args.batches))
    if batches[0] != 1:
        batches = [1, *batches]  # ratios need the batch-1 baseline of the same run

    results: dict[str, Any] = {"tile": args.tile, "settings": []}
    table = []
    with tempfile.TemporaryDirectory(prefix="eo2sar_bench_") as tmp:
        work = Path(tmp)
        scene = None
        if args.scene_size:
            scene = write_synthetic_scene(work / "scene.tif", args.scene_size)
        for ngf in args.ngf:
            ckpt = make_checkpoint(work / f"ngf{ngf}.pt", ngf=ngf, n_res=1)
            settings = [(f"model, threads={args.threads}", args.threads)]
            if args.threads != 1:
                settings.append(("model, threads=1", 1))
            for label, threads in settings:
                rows = bench_model(ckpt, batches, args.tile, threads, args.seconds)
                results["settings"].append({"ngf": ngf, "setting": label, "rows": rows})
                table += [{"ngf": ngf, "setting": label, **r} for r in rows]
            if scene is not None:
                rows = bench_pipeline(ckpt, scene, batches, work)
                label = f"pipeline {args.scene_size}px"
                results["settings"].append({"ngf": ngf, "setting": label, "rows": rows})
                table += [{"ngf": ngf, "setting": label, **r} for r in rows]
    print(format_table(table, ["ngf", "setting", "batch", "tiles", "tiles_per_s",
                               "ratio_vs_b1"]))
    path = write_json(args.out, "throughput", results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
