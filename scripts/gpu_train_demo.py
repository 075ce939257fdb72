"""Train the demo model on a lent GPU inside a fixed time budget, and pack what comes back.

Why a script: a lent GPU machine is bare (torch, numpy, pillow, click, pyyaml, tqdm; no
rasterio or dask, which `ugatit train` does not need) and lent for minutes, so everything
runs as one prepared command:

    python -m scripts.gpu_train_demo --dataset data/demo/dataset --out $OUT --budget 330

1. times the training step (two short runs, so start-up cost cancels out);
2. sizes `--iterations` to the budget and trains `--runs` seeds side by side (batch-1
   U-GAT-IT at ngf 16 leaves a GPU mostly idle, so parallel runs cost little wall time and
   give more checkpoints to choose from: GAN outputs swing between checkpoints, so the demo
   model is chosen by evaluation, not by the last step);
3. exports each checkpoint's genA2B (`python -m ugatit export`, keeps the radiometric
   contract) and packs them in tar files of at most ~15 MiB, plus one tar of the logs,
   losses, loss curves and sample sheets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

TRAIN = [sys.executable, "-m", "ugatit", "train"]
PART_LIMIT = 15 * 2**20


def train_args(dataset: str, out: Path, iterations: int, seed: int, save_every: int,
               sample_every: int, extra: list[str]) -> list[str]:
    return TRAIN + ["--dataset", dataset, "--out", str(out), "--iterations", str(iterations),
                    "--seed", str(seed), "--save-every", str(save_every),
                    "--sample-every", str(sample_every), "--keep", "0", *extra]


def step_time(dataset: str, work: Path, extra: list[str]) -> float:
    """Seconds per step from two runs of different length (start-up cancels out)."""
    walls = []
    for n in (50, 250):
        t0 = time.perf_counter()
        subprocess.run(train_args(dataset, work / f"timing_{n}", n, 0, n, n, extra),
                       check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    return max((walls[1] - walls[0]) / 200, 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True, type=Path, help="where the packed files go")
    ap.add_argument("--work", type=Path, default=Path("/tmp/eo2sar_train"))
    ap.add_argument("--budget", type=float, default=330.0, help="seconds of training")
    ap.add_argument("--runs", type=int, default=2, help="seeds trained side by side")
    ap.add_argument("--checkpoints", type=int, default=8, help="per run")
    ap.add_argument("--parallel-slowdown", type=float, default=1.3,
                    help="assumed step-time factor when runs share the GPU")
    ap.add_argument("--assume-step-ms", type=float, default=None,
                    help="skip the timing runs and size the run with this step time")
    ap.add_argument("extra", nargs="*", help="more `ugatit train` flags (after --)")
    args = ap.parse_args()
    extra = args.extra or ["--ngf", "16", "--n-res", "4", "--img-size", "128", "--device", "cuda"]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    sec = (args.assume_step_ms / 1000 if args.assume_step_ms
           else step_time(args.dataset, args.work, extra))
    factor = args.parallel_slowdown if args.runs > 1 else 1.0
    iters = int(args.budget / (sec * factor))
    save_every = max(1, iters // args.checkpoints)
    iters = save_every * args.checkpoints
    print(f"step {sec * 1000:.1f} ms alone; training {args.runs} run(s) x {iters} steps, "
          f"a checkpoint every {save_every}", flush=True)
    t0 = time.perf_counter()
    procs = []
    for seed in range(args.runs):
        run_dir = args.work / f"run_seed{seed}"
        log = open(args.work / f"train_seed{seed}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(
            train_args(args.dataset, run_dir, iters, seed, save_every,
                       max(save_every, iters // 4), extra),
            stdout=log, stderr=subprocess.STDOUT), log))
    # A hard stop: a run slower than predicted is killed, its checkpoints so far still count.
    deadline = t0 + args.budget * 1.5
    codes = []
    for p, _ in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.perf_counter())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    for _, log in procs:
        log.close()
    wall = time.perf_counter() - t0
    print(f"training exit codes {codes}, {wall:.0f} s wall", flush=True)

    exports = []
    for seed in range(args.runs):
        for ckpt in sorted((args.work / f"run_seed{seed}" / "checkpoints").glob("params_*.pt")):
            dst = args.work / "exports" / f"seed{seed}_{ckpt.stem}_genA2B.pt"
            subprocess.run([sys.executable, "-m", "ugatit", "export", str(ckpt), str(dst)],
                           check=True, stdout=subprocess.DEVNULL)
            exports.append(dst)
    part, size, tars = 0, 0, []
    for f in exports:
        if not tars or size + f.stat().st_size > PART_LIMIT:
            part += 1
            size = 0
            tars.append(tarfile.open(args.out / f"generators_{part}.tar", "w"))
        tars[-1].add(f, arcname=f.name)
        size += f.stat().st_size
    for t in tars:
        t.close()
    with tarfile.open(args.out / "runs.tar", "w") as t:
        for seed in range(args.runs):
            run_dir = args.work / f"run_seed{seed}"
            t.add(args.work / f"train_seed{seed}.log", arcname=f"seed{seed}/train.log")
            sheets = sorted((run_dir / "samples").glob("*.png"))[-3:]  # the newest 3: size
            for f in sorted(run_dir.rglob("*")):
                if f.is_file() and f.suffix != ".pt" and (f.parent.name != "samples"
                                                          or f in sheets):
                    t.add(f, arcname=f"seed{seed}/{f.relative_to(run_dir)}")
    summary = {"step_ms_alone": sec * 1000, "runs": args.runs, "iterations": iters,
               "save_every": save_every, "train_wall_s": wall, "exit_codes": codes,
               "flags": extra, "exports": [f.name for f in exports]}
    (args.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
