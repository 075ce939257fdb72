"""Model-only generator throughput on a GPU, per precision / layout / micro-batch.

Why: the speed issue needs, for each speed option, its tiles/s AND its deviation from the
float32 parity path, measured side by side on the same card. This script needs torch and
this repository only (no rasterio / dask), so it runs on a bare GPU machine:

    python -m scripts.gpu_model_bench --json bench.json [--batches 8 32 64] [--compile]

Variants (seed-size light generator: ngf 64, n_res 4, 256 px, random weights, seed 0):
  fp32        true float32 (TF32 off): the parity path
  tf32        cuDNN / cuBLAS TF32
  bf16, fp16  torch.autocast
  bf16_cl     bf16 autocast + channels_last
  *_compile   torch.compile of the above (--compile; falls back silently if it fails)
Deviation: max and mean absolute difference of the output from fp32, on the unit scale
((x + 1) / 2, what the pipeline writes), on random inputs in [-1, 1]. Timing: CUDA events
around each forward after warm-up, median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from ugatit.config import ModelConfig
from ugatit.device import set_tf32
from ugatit.networks import ResnetGenerator

GFLOP_PER_TILE = 105.0  # seed-size light generator, 256 px (2 x MACs), see the speed issue

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"tf32": False, "dtype": None, "cl": False},
    "tf32": {"tf32": True, "dtype": None, "cl": False},
    "bf16": {"tf32": False, "dtype": torch.bfloat16, "cl": False},
    "fp16": {"tf32": False, "dtype": torch.float16, "cl": False},
    "bf16_cl": {"tf32": False, "dtype": torch.bfloat16, "cl": True},
}


def _forward(gen: torch.nn.Module, x: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    ctx = torch.autocast(x.device.type, dtype=spec["dtype"]) if spec["dtype"] else nullcontext()
    with ctx:
        return gen(x)[0].float()


def time_variant(gen: torch.nn.Module, x: torch.Tensor, spec: dict[str, Any],
                 repeats: int) -> float:
    """Median seconds of one forward of batch x (CUDA events, after 3 warm-ups)."""
    for _ in range(3):
        _forward(gen, x, spec)
    if x.device.type != "cuda":  # the CPU smoke run (--smoke): host clock
        t0 = time.perf_counter()
        for _ in range(repeats):
            _forward(gen, x, spec)
        return (time.perf_counter() - t0) / repeats
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _forward(gen, x, spec)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return statistics.median(times)


def run(batches: list[int], repeats: int, use_compile: bool, device: str = "cuda",
        config: ModelConfig | None = None, size: int = 256) -> list[dict[str, Any]]:
    config = config or ModelConfig()
    torch.manual_seed(0)
    base = ResnetGenerator(config).to(device).eval().requires_grad_(False)
    gen_cl = ResnetGenerator(config).to(device).eval().requires_grad_(False)
    gen_cl.load_state_dict(base.state_dict())
    gen_cl = gen_cl.to(memory_format=torch.channels_last)
    variants = dict(VARIANTS)
    nets: dict[str, torch.nn.Module] = {k: (gen_cl if v["cl"] else base)
                                        for k, v in variants.items()}
    if use_compile:
        for name in ("fp32", "bf16_cl"):
            try:
                nets[f"{name}_compile"] = torch.compile(nets[name])
                variants[f"{name}_compile"] = variants[name]
            except Exception as exc:  # noqa: BLE001 - compile is optional; say why and go on
                print(f"compile of {name} unavailable: {exc}")
    rows = []
    g = torch.Generator(device=device).manual_seed(1)
    with torch.inference_mode():
        for batch in batches:
            x = torch.rand(batch, 3, size, size, device=device, generator=g) * 2 - 1
            set_tf32(False)
            ref = (_forward(base, x, VARIANTS["fp32"]) + 1) / 2
            for name, spec in variants.items():
                set_tf32(spec["tf32"])
                net = nets[name]
                xin = x.to(memory_format=torch.channels_last) if spec["cl"] else x
                t0 = time.perf_counter()
                try:
                    out = (_forward(net, xin, spec) + 1) / 2
                    sec = time_variant(net, xin, spec, repeats)
                except Exception as exc:  # noqa: BLE001 - a failed variant is a row, not a crash
                    rows.append({"variant": name, "batch": batch, "error": str(exc)[:200]})
                    continue
                diff = (out - ref).abs()
                tps = batch / sec
                rows.append({
                    "variant": name, "batch": batch, "tiles_per_s": round(tps, 1),
                    "gflops": round(tps * GFLOP_PER_TILE, 0),
                    "max_abs_dev": float(diff.max()), "mean_abs_dev": float(diff.mean()),
                    "setup_s": round(time.perf_counter() - t0, 1),
                })
            set_tf32(False)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default="gpu_model_bench.json")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU check of this script itself: ngf 4, 32 px, fp16 skipped")
    args = ap.parse_args()
    if args.smoke:
        del VARIANTS["fp16"]
        rows = run(args.batches, args.repeats, args.compile, "cpu", ModelConfig(ngf=4, n_res=1), 32)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine")
    else:
        rows = run(args.batches, args.repeats, args.compile)
    device = "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    info = {"device": device, "torch": torch.__version__,
            "model": "light ngf 64 n_res 4, 256 px, random weights", "rows": rows}
    with open(args.json, "w") as f:
        json.dump(info, f, indent=2)
    fp32 = {r["batch"]: r["tiles_per_s"] for r in rows
            if r["variant"] == "fp32" and "error" not in r}
    print(f"{info['device']}, torch {info['torch']}")
    print(f"{'variant':<16}{'batch':>6}{'tiles/s':>10}{'x fp32':>8}{'max dev':>10}{'mean dev':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<16}{r['batch']:>6}  error: {r['error'][:60]}")
            continue
        ratio = r["tiles_per_s"] / fp32[r["batch"]] if r["batch"] in fp32 else float("nan")
        print(f"{r['variant']:<16}{r['batch']:>6}{r['tiles_per_s']:>10.1f}{ratio:>8.2f}"
              f"{r['max_abs_dev']:>10.2e}{r['mean_abs_dev']:>10.2e}")


if __name__ == "__main__":
    main()
