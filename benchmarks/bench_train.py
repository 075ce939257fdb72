"""Training speed on CPU: our U-GAT-IT step against a step that mirrors the original code.

What differs (same losses, same updates: tests/ugatit/test_train.py checks that our step
and a transcription of the original give bit-identical weights on CPU):

  ours      the D step judges detached fakes (no backward through both generators) and
            the G step reuses those translations (two generator forwards less);
            discriminators are frozen during the G step (their gradients were computed
            and then zeroed unused); the sample sheet runs under no_grad + eval().
  original  fakes of the D step keep their graph; D gradients are computed in the G step;
            the sample-sheet forwards keep autograd graphs (the original's OOM at step 1000).

Two models: the seed-size light model (ngf 64, n_res 4, 256 px; a few steps, it is slow on
2 cores) and a small one (ngf 16, n_res 4, 128 px: the demo model). Steps of the two
variants alternate, so machine load drifts hit both alike. Prints a table, writes
bench_out/train.json.

    python -m benchmarks.bench_train [--steps-seed 3] [--steps-small 8] [--threads N]
                                     [--models small seed]
    python -m benchmarks.bench_train --device cuda --steps-seed 20 --steps-small 30  # + bf16
    python -m benchmarks.bench_train --cpu-options [--steps-options 8]

--cpu-options: the multispectral demo model's step (4 bands in, VV and VH out, ngf 16,
96 px, paired term on) under the CPU settings that could make it faster, each in its own
subprocess (thread settings cannot change inside one): torch threads 1 vs 2, channels-last
tensors, bf16 autocast (where the CPU has bf16 units), and the data loading of one step
(three 96 px crops of float32 GeoTIFF tiles) against the step itself. Rows alternate
within one run; the machine's load average is recorded beside them (a loaded machine
changes the threads answer by an order of magnitude).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DEFAULT_OUT, format_table, write_json


def original_step(nets: dict[str, Any], opt_g: Any, opt_d: Any, real_a: Any, real_b: Any,
                  cfg: Any) -> None:
    """The original UGATIT-pytorch iteration: no detach, discriminators never frozen."""
    from ugatit.losses import discriminator_term
    from ugatit.train import _generator_losses, clip_rho

    g_a2b, g_b2a = nets["genA2B"], nets["genB2A"]
    opt_d.zero_grad()
    fake_a2b, fake_b2a = g_a2b(real_a)[0], g_b2a(real_b)[0]  # graph kept
    d_loss = cfg.adv_weight * sum(
        discriminator_term(nets[f"dis{n}"], real, fake) for n, real, fake in
        (("GA", real_a, fake_b2a), ("LA", real_a, fake_b2a), ("GB", real_b, fake_a2b),
         ("LB", real_b, fake_a2b)))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    dis = {n: nets[n] for n in ("disGA", "disGB", "disLA", "disLB")}
    _generator_losses(g_a2b, g_b2a, dis, real_a, real_b, cfg, {}).backward()
    opt_g.step()
    clip_rho([g_a2b, g_b2a])


def sheet_forwards(nets: dict[str, Any], images: Any, grad: bool) -> None:
    """The sample sheet's three translations per image, with or without autograd."""
    import torch

    g_a2b, g_b2a = nets["genA2B"], nets["genB2A"]
    with torch.set_grad_enabled(grad):
        for img in images:
            x = img[None]
            g_b2a(x)
            g_b2a(g_a2b(x)[0])


def bench_setting(ngf: int, size: int, steps: int, n_sheet: int, device: str = "cpu",
                  bf16: bool = False) -> dict[str, Any]:
    import torch

    from ugatit.train import TrainConfig, build_networks, make_optimizers, train_step

    dev = torch.device(device)
    cfg = TrainConfig(ngf=ngf, n_res=4, img_size=size)
    nets = build_networks(cfg.model, 0, dev)
    opt_g, opt_d = make_optimizers(nets, cfg)
    g = torch.Generator().manual_seed(0)
    a, b = ((torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(dev) for _ in range(2))
    images = (torch.rand(n_sheet, 3, size, size, generator=g) * 2 - 1).to(dev)
    variants = {
        "ours": lambda: train_step(nets, opt_g, opt_d, a, b, cfg),
        "original": lambda: original_step(nets, opt_g, opt_d, a, b, cfg),
    }
    if bf16:
        bf = TrainConfig(ngf=ngf, n_res=4, img_size=size, precision="bf16")
        variants["ours_bf16"] = lambda: train_step(nets, opt_g, opt_d, a, b, bf)

    def timed(fn: Any) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for fn in variants.values():  # warm-up: kernels/primitives, allocator, Adam state
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(steps):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    sheet = {name: timed(lambda grad=grad: sheet_forwards(nets, images, grad))
             for name, grad in (("ours", False), ("original", True))}
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    row = {"device": device, "ngf": ngf, "img_size": size, "steps": steps,
           "ours_s_per_step": med["ours"], "original_s_per_step": med["original"],
           "ours_it_per_s": 1 / med["ours"], "original_it_per_s": 1 / med["original"],
           "speedup": med["original"] / med["ours"], "sheet_images": n_sheet,
           "sheet_ours_s": sheet["ours"], "sheet_original_s": sheet["original"],
           "all_steps_s": times}
    if bf16:
        row["ours_bf16_s_per_step"] = med["ours_bf16"]
    return row


OPTION_SCRIPT = r"""
import json, sys, time
import torch
threads, variant, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
from dataclasses import replace
from ugatit.train import TrainConfig, build_networks, make_optimizers, train_step
cfg = TrainConfig(ngf=16, n_res=4, img_size=96, paired_weight=10.0,
                  precision="bf16" if variant == "bf16" else "fp32")
model = replace(cfg.model, in_ch=4, out_ch=2)
nets = build_networks(model, 0, torch.device("cpu"))
fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
for n in nets.values():
    n.to(memory_format=fmt)
opt_g, opt_d = make_optimizers(nets, cfg)
g = torch.Generator().manual_seed(0)
a = (torch.rand(1, 4, 96, 96, generator=g) * 2 - 1).contiguous(memory_format=fmt)
b = (torch.rand(1, 2, 96, 96, generator=g) * 2 - 1).contiguous(memory_format=fmt)
db = torch.tensor([12.5, 16.25])
train_step(nets, opt_g, opt_d, a, b, cfg, 1, (a, b), db)  # warm-up
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    train_step(nets, opt_g, opt_d, a, b, cfg, 1, (a, b), db)
    times.append(time.perf_counter() - t0)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def data_seconds(samples: int) -> float | None:
    """Median seconds to draw one step's crops (A, B, pair) from multiband tiles cut from
    the bundled BigEarthNet pairs (None if the tiles cannot be made)."""
    import tempfile

    from tests.helpers import make_multiband_dataset
    from ugatit.data import UnpairedDataset, find_pairs, index_domain

    with tempfile.TemporaryDirectory() as tmp:
        root = make_multiband_dataset(Path(tmp) / "ds")
        fa = index_domain(root / "trainA", 0.02)
        fb = index_domain(root / "trainB", 0.02)
        data = UnpairedDataset(fa, fb, 96, pairs=find_pairs(fa, fb))
        times = []
        for p in range(samples):
            t0 = time.perf_counter()
            data[p]
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def cpu_options(steps: int) -> list[dict[str, Any]]:
    import os
    import subprocess
    import sys

    from benchmarks._common import REPO

    settings = [(1, "fp32"), (2, "fp32"), (1, "channels_last"), (1, "bf16")]
    times: dict[tuple[int, str], list[float]] = {k: [] for k in settings}
    for _ in range(2):  # two rounds, alternating, so load drifts hit every row alike
        for threads, variant in settings:
            res = subprocess.run([sys.executable, "-c", OPTION_SCRIPT, str(threads), variant,
                                  str(steps)], capture_output=True, text=True, cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                                 timeout=1800)
            if res.returncode == 0:
                times[(threads, variant)].append(float(res.stdout.strip().splitlines()[-1]))
    base = min(times[(1, "fp32")] or [float("nan")])
    rows = []
    for (threads, variant), t in times.items():
        best = min(t) if t else float("nan")
        rows.append({"threads": threads, "variant": variant, "s_per_step": best,
                     "it_per_s": 1 / best if t else float("nan"),
                     "vs_1_thread_fp32": base / best if t else float("nan"),
                     "load_average": os.getloadavg()[0]})
    rows.append({"threads": 1, "variant": "data loading (one step's crops)",
                 "s_per_step": data_seconds(20), "it_per_s": float("nan"),
                 "vs_1_thread_fp32": float("nan"), "load_average": os.getloadavg()[0]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps-seed", type=int, default=3, help="timed steps, ngf 64 / 256 px")
    p.add_argument("--steps-small", type=int, default=8, help="timed steps, ngf 16 / 128 px")
    p.add_argument("--models", nargs="+", choices=("small", "seed"), default=["small", "seed"],
                   help="small = ngf 16 / 128 px, seed = ngf 64 / 256 px (~1 min a step on "
                        "2 CPU cores)")
    p.add_argument("--sheet-images", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda also times bf16)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cpu-options", action="store_true",
                   help="time the multispectral demo step under CPU settings (module doc)")
    p.add_argument("--steps-options", type=int, default=6)
    args = p.parse_args(argv)
    import torch

    if args.cpu_options:
        rows = cpu_options(args.steps_options)
        print(format_table(rows, ["threads", "variant", "s_per_step", "it_per_s",
                                  "vs_1_thread_fp32", "load_average"]))
        path = write_json(args.out, "train_cpu_options", {"rows": rows})
        print(f"wrote {path}")
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:
        from ugatit import set_tf32

        set_tf32(False)  # the trainer's default
    settings = {"small": (16, 128, args.steps_small), "seed": (64, 256, args.steps_seed)}
    rows = [bench_setting(*settings[m], args.sheet_images, args.device, cuda)
            for m in args.models]
    print(format_table(rows, ["device", "ngf", "img_size", "steps", "ours_s_per_step",
                              "original_s_per_step", "speedup", "sheet_ours_s",
                              "sheet_original_s", *(["ours_bf16_s_per_step"] if cuda else [])]))
    name = "train" if not cuda else "train_cuda"
    path = write_json(args.out, name, {"threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
