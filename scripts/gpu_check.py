#!/usr/bin/env python
"""One-shot GPU check: parity with the CPU, throughput, and the pipeline on CUDA.

Meant for a GPU machine that has torch (CUDA build) and this repository but maybe not
rasterio / dask / shapely: ``--wheels DIR`` installs every wheel of DIR with
``pip install --no-index`` first when rasterio is missing. Everything the run measures goes
to ``$OUT/gpu_check.json`` (``OUT`` defaults to ./bench_out), rewritten after every stage,
so a run cut short still leaves what it measured. Exit status 0 when every check passed.

Stages (each timed; a stage that fails is recorded and the next one still runs):
  1. env         torch / CUDA / device / TF32 defaults
  2. parity      genA2B forward on DEVICE vs CPU float32, on the same input: max abs and
                 relative error, with TF32 off (strict float32) and with torch's default
                 flags (cuDNN convolutions may use TF32 on Ampere+ by default)
  3. throughput  tiles/s at batch 1, 8, 32 in float32 and under bf16 autocast (and the
                 bf16 output's difference from float32)
  4. pipeline    ``python -m pipeline run --device DEVICE`` on a synthetic 4096 x 4096
                 scene and on tests/data/sn6_rotterdam_eo_rgb.tif, compared with
                 ``--device cpu`` runs of the same input. The CPU reference of the big
                 scene is a crop (``--cpu-ref-size``, default 2048, since a 64-channel model
                 runs ~8 tiles/s on 16 cores): the comparison covers the crop minus one tile
                 at its right and bottom edges, where the crop's reflect padding differs.
                 The device run is repeated with NVIDIA_TF32_OVERRIDE=0 (TF32 off in cuDNN /
                 cuBLAS) so the table shows what TF32 costs in accuracy.

Tolerances (float32 reordering on another device gives ~1e-6..1e-5 on a 30-layer network
with instance norms; anything above these is not rounding):
  model  max |out_dev - out_cpu| <= 1e-3 in the generator's [-1, 1] range (1/8 of one
         8-bit grey level, 2/255)
  scene  max |out_dev - out_cpu| <= 2e-3 in the output's 0..1 unit range (half a grey
         level, 1/255), same nodata mask

Budget: ~3-4 minutes on an H100 with the defaults (ngf 64 light model). Smoke test on a
machine without a GPU:

    python -m scripts.gpu_check --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ugatit.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]

MODEL_ATOL = 1e-3
SCENE_ATOL = 2e-3
SN6 = REPO / "tests" / "data" / "sn6_rotterdam_eo_rgb.tif"
TILE, OVERLAP = 256, 64  # pipeline defaults (PipelineConfig)


class Report:
    """The JSON document, written after every stage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict[str, Any] = {"checks": [], "stages": {}}
        self.t0 = time.perf_counter()

    def check(self, name: str, ok: bool, value: Any, limit: Any, note: str = "") -> None:
        self.doc["checks"].append({"name": name, "ok": bool(ok), "value": value,
                                   "limit": limit, "note": note})
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {value} (limit {limit}) {note}".rstrip(),
              flush=True)

    def save(self) -> None:
        self.doc["elapsed_s"] = time.perf_counter() - self.t0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.doc, indent=2, default=str) + "\n")

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = fn()
            self.doc["stages"][name] = {"ok": True, "seconds": time.perf_counter() - t0,
                                        **result}
        except Exception as e:  # a failed stage is a result; the next stage still runs
            traceback.print_exc()
            self.doc["stages"][name] = {"ok": False, "seconds": time.perf_counter() - t0,
                                        "error": f"{type(e).__name__}: {e}"}
            self.check(f"{name} stage ran", False, f"{type(e).__name__}: {e}", "no error")
            result = None
        self.save()
        return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def tf32(enabled: bool | None):
    """Set cuDNN / cuBLAS TF32 flags (None: leave torch's defaults)."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if enabled is not None:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def smooth_input(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """[n, 3, size, size] in [-1, 1]: upsampled noise, image-like (not white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 16, size // 16, generator=g) * 2 - 1
    fine = torch.rand(n, 3, size, size, generator=g) * 0.2 - 0.1
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                         align_corners=False)
    return (up + fine).clamp(-1, 1)


def _errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    d = (out.float().cpu() - ref.float().cpu()).abs()
    scale = float(ref.abs().max()) or 1.0
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "max_rel": float(d.max()) / scale}


# ------------------------------------------------------------------------------ stages


def stage_env(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "device": str(device),
        "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32_default": torch.backends.cuda.matmul.allow_tf32,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = torch.cuda.get_device_capability(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    for mod in ("rasterio", "dask", "distributed", "shapely"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def stage_parity(ckpt: Path, device: torch.device, size: int, rep: Report) -> dict[str, Any]:
    from ugatit import load_checkpoint

    x = smooth_input(2, size)
    cpu = load_checkpoint(ckpt, device="cpu", networks=("genA2B",)).genA2B
    with torch.inference_mode():
        ref = cpu(x)
    dev = load_checkpoint(ckpt, device=device, networks=("genA2B",)).genA2B
    out: dict[str, Any] = {"input": list(x.shape)}
    for label, flag in (("strict_fp32", False), ("torch_default", None)):
        with tf32(flag), torch.inference_mode():
            y = dev(x.to(device))
        _sync(device)
        out[label] = {"out": _errors(y[0], ref[0]), "cam_logit": _errors(y[1], ref[1]),
                      "heatmap": _errors(y[2], ref[2])}
        rep.check(f"model parity {label} max abs", out[label]["out"]["max_abs"] <= MODEL_ATOL,
                  out[label]["out"]["max_abs"], MODEL_ATOL,
                  "TF32 allowed by torch default" if flag is None else "TF32 off")
    return out


def _time(fn: Callable[[], Any], device: torch.device, seconds: float, min_iters: int = 3
          ) -> tuple[float, int]:
    fn()  # warm-up: cuDNN algorithm choice, allocator
    fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= min_iters:
            _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    return (time.perf_counter() - t0) / n, n


def stage_throughput(ckpt: Path, device: torch.device, size: int, batches: list[int],
                     seconds: float, rep: Report) -> dict[str, Any]:
    from ugatit import load_checkpoint

    gen = load_checkpoint(ckpt, device=device, networks=("genA2B",)).genA2B
    rows = []
    for b in batches:
        x = smooth_input(b, size, seed=b).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row: dict[str, Any] = {"batch": b}
        with torch.inference_mode():
            per, n = _time(lambda x=x: gen(x), device, seconds)
            row["fp32_tiles_per_s"] = b / per
            ref = gen(x)[0].float()
            autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            with autocast:
                per_bf, _ = _time(lambda x=x: gen(x), device, seconds)
                y = gen(x)[0].float()
            row["bf16_tiles_per_s"] = b / per_bf
            row["bf16_speedup"] = per / per_bf
            row["bf16_vs_fp32"] = _errors(y, ref)
        if device.type == "cuda":
            row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        rows.append(row)
        print(f"  batch {b}: fp32 {row['fp32_tiles_per_s']:.1f} tiles/s, bf16 "
              f"{row['bf16_tiles_per_s']:.1f} tiles/s, bf16 max abs diff "
              f"{row['bf16_vs_fp32']['max_abs']:.2e}", flush=True)
    return {"tile": size, "rows": rows}


def _ensure_pipeline_deps(wheels: Path | None) -> dict[str, Any]:
    try:
        import rasterio  # noqa: F401

        return {"installed_from_wheels": False}
    except ImportError:
        if wheels is None or not wheels.is_dir():
            raise RuntimeError("rasterio is not installed; pass --wheels DIR with the wheels "
                               "of rasterio, dask, distributed, shapely, click, pyyaml, tqdm"
                               ) from None
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
           *files]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install from {wheels} failed: {proc.stderr[-1500:]}")
    import importlib

    importlib.invalidate_caches()
    import rasterio  # noqa: F401

    return {"installed_from_wheels": True, "wheels": len(files)}


def run_cli(scene: Path, out: Path, ckpt: Path, device: str, extra_env: dict[str, str]
            | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline", "run", str(scene), str(out), "--model",
           str(ckpt), "--device", device, "-q", "--overwrite"]
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    res = {"device": device, "env": extra_env or {}, "seconds": time.perf_counter() - t0,
           "returncode": proc.returncode}
    if proc.returncode != 0:
        res["stderr"] = proc.stderr[-2000:]
        raise RuntimeError(f"pipeline run on {device} failed ({proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1:]}")
    return res


def compare_outputs(a: Path, b: Path, region: int | None = None) -> dict[str, Any]:
    """Max/mean |a - b| over pixels valid in both (top-left region x region if given)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    win = None if region is None else Window(0, 0, region, region)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        same_grid = (da.crs == db.crs and da.transform == db.transform) if region is None \
            else da.crs == db.crs
        x = da.read(1, window=win, masked=True)
        y = db.read(1, window=win, masked=True)
    mx, my = np.ma.getmaskarray(x), np.ma.getmaskarray(y)
    both = ~mx & ~my
    d = np.abs(np.ma.getdata(x).astype(np.float64) - np.ma.getdata(y).astype(np.float64))[both]
    return {"pixels": int(both.sum()), "same_mask": bool((mx == my).all()),
            "same_grid": bool(same_grid), "max_abs": float(d.max()) if d.size else math.nan,
            "mean_abs": float(d.mean()) if d.size else math.nan}


def _tiles(size: int) -> int:
    n = 1 + max(0, -(-(size - TILE) // (TILE - OVERLAP)))
    return n * n


def stage_pipeline(ckpt: Path, device: str, work: Path, size: int, ref_size: int,
                   wheels: Path | None, rep: Report) -> dict[str, Any]:
    result: dict[str, Any] = {"deps": _ensure_pipeline_deps(wheels)}
    from rasterio.windows import Window  # after _ensure_pipeline_deps: maybe just installed

    from pipeline.synthetic import crop_raster, write_synthetic_scene

    t0 = time.perf_counter()
    scene = write_synthetic_scene(work / f"synthetic_{size}.tif", size)
    result["synthetic_write_s"] = time.perf_counter() - t0
    ref_size = min(ref_size, size)
    ref_scene = scene if ref_size == size else crop_raster(
        scene, work / "ref_crop.tif", Window(0, 0, ref_size, ref_size),
        tiled=True, blockxsize=512, blockysize=512)
    runs = []
    cases = [("sn6", SN6, SN6, None, _tiles(200)),
             (f"synthetic_{size}", scene, ref_scene,
              None if ref_size == size else ref_size - TILE, _tiles(size))]
    for name, path, ref_path, region, tiles in cases:
        cpu_out = work / f"{name}_cpu.tif"
        cpu_run = run_cli(ref_path, cpu_out, ckpt, "cpu")
        variants = [("torch_default", None)]
        if device.startswith("cuda"):
            variants.append(("tf32_off", {"NVIDIA_TF32_OVERRIDE": "0"}))
        for label, env in variants:
            dev_out = work / f"{name}_{label}.tif"
            dev_run = run_cli(path, dev_out, ckpt, device, env)
            cmp = compare_outputs(dev_out, cpu_out, region)
            row = {"scene": name, "variant": label, "tiles": tiles,
                   "device_seconds": dev_run["seconds"],
                   "device_tiles_per_s": tiles / dev_run["seconds"],
                   "cpu_ref_seconds": cpu_run["seconds"], "cpu_ref_input": str(ref_path.name),
                   "compared_region": region, **cmp}
            runs.append(row)
            rep.check(f"pipeline {name} {label} vs cpu max abs",
                      cmp["max_abs"] <= SCENE_ATOL and cmp["same_mask"], cmp["max_abs"],
                      SCENE_ATOL, f"same nodata mask: {cmp['same_mask']}; "
                      f"{row['device_tiles_per_s']:.1f} tiles/s incl. start-up")
    result["runs"] = runs
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint to test [default: a random ngf 64 light model]")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true",
                   help="small model and sizes: a smoke test of this script (~1 min on CPU)")
    p.add_argument("--scene-size", type=int, default=None, help="[default: 4096; quick 512]")
    p.add_argument("--cpu-ref-size", type=int, default=None,
                   help="crop of the synthetic scene run on CPU [default: 2048; quick 512]")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="[default: 1 8 32; quick 1 2]")
    p.add_argument("--seconds", type=float, default=None,
                   help="timing per point [default: 2; quick 0.2]")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl",
                   help="wheels to install when rasterio is missing [default: .whl]")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["parity", "throughput", "pipeline"])
    args = p.parse_args(argv)
    quick = args.quick
    scene_size = args.scene_size or (512 if quick else 4096)
    ref_size = args.cpu_ref_size or (512 if quick else 2048)
    batches = args.batches or ([1, 2] if quick else [1, 8, 32])
    seconds = args.seconds if args.seconds is not None else (0.2 if quick else 2.0)

    out_dir = Path(os.environ.get("OUT") or REPO / "bench_out")
    rep = Report(out_dir / "gpu_check.json")
    device = torch.device(args.device)
    rep.doc["args"] = {k: str(v) for k, v in vars(args).items()}
    rep.stage("env", lambda: stage_env(device))

    with tempfile.TemporaryDirectory(prefix="eo2sar_gpu_") as tmp:
        work = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            from ugatit import ModelConfig, init_checkpoint

            cfg = ModelConfig(ngf=8, n_res=1) if quick else ModelConfig(ngf=64, n_res=4)
            ckpt = init_checkpoint(work / "random.pt", cfg, seed=0, networks=("genA2B",))
            rep.doc["checkpoint"] = {"random": True, "ngf": cfg.ngf, "n_res": cfg.n_res,
                                     "light": cfg.light}
        else:
            rep.doc["checkpoint"] = {"path": str(ckpt)}
        size = 64 if quick else TILE
        if "parity" not in args.skip:
            rep.stage("parity", lambda: stage_parity(ckpt, device, size, rep))
        if "throughput" not in args.skip:
            rep.stage("throughput", lambda: stage_throughput(ckpt, device, size, batches,
                                                             seconds, rep))
        if "pipeline" not in args.skip:
            rep.stage("pipeline", lambda: stage_pipeline(ckpt, args.device, work, scene_size,
                                                         ref_size, args.wheels, rep))
    ok = all(c["ok"] for c in rep.doc["checks"])
    rep.doc["all_ok"] = ok
    rep.save()
    print(f"{'all checks passed' if ok else 'SOME CHECKS FAILED'}; wrote {rep.path} "
          f"({rep.doc['elapsed_s']:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
