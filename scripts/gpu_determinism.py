"""GPU check of the same-bytes invariant: fixed-shape forwards and pipeline runs.

1. model: 24 tiles through ``forward_fixed_shape`` in two different orders must give
   bit-identical per-tile outputs (a tile's bytes depend neither on its companions nor
   on its position); the plain variable-batch forward is reported for comparison; the
   same with a scene's normalisation statistics (--norm scene), which must also come out
   bit-identical when recomputed.
2. pipeline: ``python -m pipeline run --device DEVICE`` on a synthetic scene with
   --batch-size 32, 64 and 96 (whole multiples of the CUDA micro-batch, 32: smaller
   batch sizes all round up to one 32-tile task and would compare nothing) and
   --block-size 512: identical output bytes expected; then --precision bf16,
   --channels-last and --compile, each at --batch-size 32 and 96.
3. app.py on DEVICE vs cpu with TF32 off: 8-bit level differences.

Writes $OUT/gpu_determinism.json after EVERY section (`sections_done` says which; a
device call cut short still returns what was measured), and gives each subprocess its
own timeout (--subprocess-timeout; a run past it is recorded as a timeout, not waited
for). --sections picks sections. Smoke test without a GPU:
``python -m scripts.gpu_determinism --device cpu --size 512``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from pipeline.run.inference import CUDA_MICRO_BATCH, forward_fixed_shape, pin_threads
from ugatit import ModelConfig, init_checkpoint, load_checkpoint
from ugatit.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def smooth(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 16, size // 16, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    return (x + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1) * 2 - 1


def write_scene(path: Path, size: int) -> None:
    x = ((smooth(1, size, 3)[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                   crs="EPSG:32631", transform=from_origin(590000, 5750000, 4.5, 4.5),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(x)


def raster_digest(path: Path) -> str:
    with rasterio.open(path) as ds:
        return hashlib.sha256(ds.read().tobytes()).hexdigest()


#: --batch-size values compared: different whole multiples of the micro-batch (32)
BATCHES = (32, 64, 96)
SECTIONS = ("model", "pipeline", "options", "app")


def _run(cmd: list[str], timeout: float) -> dict:
    """A subprocess with its own timeout: exit status, seconds, stderr tail; exit None and
    `timeout` true when it ran past `timeout` seconds (killed)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"exit": None, "timeout": True, "seconds": time.perf_counter() - t0,
                "stderr": ""}
    return {"exit": p.returncode, "timeout": False, "seconds": time.perf_counter() - t0,
            "stderr": p.stderr[-400:] if p.returncode else ""}


def _pipeline(scene: Path, out: Path, ck_path: Path, device: str, extra: list[str],
              timeout: float) -> dict:
    run = _run([sys.executable, "-m", "pipeline", "run", str(scene), str(out), "--model",
                str(ck_path), "--device", device, "-q", *extra], timeout)
    run["digest"] = raster_digest(out) if run["exit"] == 0 else None
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=2048, help="synthetic scene side")
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--subprocess-timeout", type=float, default=60.0,
                    help="seconds each pipeline / app.py subprocess may run")
    args = ap.parse_args(argv)
    out_dir = Path(os.environ.get("OUT", REPO / "bench_out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_determinism.json"
    work = Path(tempfile.mkdtemp(prefix="gpudet_"))
    res: dict = {"device": args.device, "micro_batch": CUDA_MICRO_BATCH,
                 "torch": str(torch.__version__), "sections_done": [], "partial": True}
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)

    def save(section: str | None = None) -> None:
        """The results so far, on disk now (atomic: a reader never sees half a file)."""
        if section:
            res["sections_done"].append(section)
        atomic_write_text(path, json.dumps(res, indent=1))

    save()
    ck_path = init_checkpoint(work / "m.pt", ModelConfig(ngf=args.ngf, n_res=2), seed=1)
    if "model" in args.sections:
        res.update(model_section(ck_path, args.device))
        save("model")
    scene = work / "scene.tif"
    if {"pipeline", "options"} & set(args.sections):
        write_scene(scene, args.size)
    timeout = args.subprocess_timeout
    if "pipeline" in args.sections:
        runs = {}
        for name, extra in [*((f"batch{b}", ["--batch-size", str(b)]) for b in BATCHES),
                            (f"batch{BATCHES[0]}_block512",
                             ["--batch-size", str(BATCHES[0]), "--block-size", "512"])]:
            runs[name] = _pipeline(scene, work / f"{name}.tif", ck_path, args.device, extra,
                                   timeout)
            res["pipeline_runs"] = runs
            save()
        digests = {r["digest"] for r in runs.values()}
        res["pipeline_same_bytes"] = len(digests) == 1 and None not in digests
        save("pipeline")
    if "options" in args.sections:
        # the speed options keep the same bytes for their own value (docs/performance.md)
        lo, hi = BATCHES[0], BATCHES[-1]
        for option in (["--precision", "bf16"], ["--channels-last"], ["--compile"]):
            name = option[-1].lstrip("-")
            pair = {b: _pipeline(scene, work / f"{name}_{b}.tif", ck_path, args.device,
                                 ["--batch-size", str(b), *option], timeout)
                    for b in (lo, hi)}
            res[f"{name}_runs"] = pair
            res[f"{name}_same_bytes_batch_{lo}_{hi}"] = (
                pair[lo]["digest"] is not None and pair[lo]["digest"] == pair[hi]["digest"])
            save()
        save("options")
    if "app" in args.sections:
        res.update(app_section(args.device, work, timeout))
        save("app")

    ok = all(v for k, v in res.items() if k.endswith("_bitwise_equal")
             or "_same_bytes" in k) and bool(res["sections_done"])
    res["ok"] = bool(ok)
    res["partial"] = False
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_runs")}, indent=1))
    save()
    return 0 if ok else 1


def model_section(ck_path: Path, device: str) -> dict:
    """Fixed-shape forwards: a tile's bytes depend neither on its companions nor on its
    position, with and without a scene's statistics."""
    gen = load_checkpoint(ck_path, device=device, networks=("genA2B",)).genA2B
    pin_threads(device)
    dev = torch.device(device)
    x = smooth(24, 256, 0)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    res: dict = {}
    with torch.inference_mode():
        a, _ = forward_fixed_shape(gen, x, dev, CUDA_MICRO_BATCH, heatmap=False)
        b, _ = forward_fixed_shape(gen, x[perm], dev, CUDA_MICRO_BATCH, heatmap=False)
        b = b[torch.argsort(perm)]
        c, _ = forward_fixed_shape(gen, x[:5], dev, CUDA_MICRO_BATCH, heatmap=False)
        plain16 = gen(x[:16].to(dev))[0].float().cpu()
        # --norm scene: the same with a scene's statistics (pooled over 16 of the tiles)
        stats = gen.collect_stats(x[:16].to(dev)).to("cpu")
        sa, _ = forward_fixed_shape(gen, x, dev, CUDA_MICRO_BATCH, heatmap=False, stats=stats)
        sb, _ = forward_fixed_shape(gen, x[perm], dev, CUDA_MICRO_BATCH, heatmap=False,
                                    stats=stats)
        sb = sb[torch.argsort(perm)]
        stats_again = gen.collect_stats(x[:16].to(dev)).to("cpu")
    res["fixed_shape_permuted_bitwise_equal"] = bool(torch.equal(a, b))
    res["fixed_shape_padded_bitwise_equal"] = bool(torch.equal(a[:5], c))
    res["fixed_shape_permuted_max_abs"] = float((a - b).abs().max())
    res["plain_batch16_vs_fixed_max_abs"] = float((plain16 - a[:16]).abs().max())
    res["scene_stats_permuted_bitwise_equal"] = bool(torch.equal(sa, sb))
    res["scene_stats_recomputed_bitwise_equal"] = all(
        torch.equal(u, v) for key in stats.layers
        for u, v in zip(vars(stats.layers[key]).values(), vars(stats_again.layers[key]).values(),
                        strict=True) if u is not None) and (
        stats.z is None or torch.equal(stats.z, stats_again.z))
    return res


def app_section(device: str, work: Path, timeout: float) -> dict:
    """app.py on `device` against the CPU (TF32 off): 8-bit level differences."""
    imgs = {}
    res: dict = {}
    for d in dict.fromkeys(["cpu", device]):
        o = work / f"app_{d.replace(':', '')}.png"
        run = _run([sys.executable, "app.py", "--device", d, "--model_path",
                    "checkpoints/eo2sar_demo_ngf8_random.pt", "--img",
                    "tests/data/sn6_rotterdam_eo_rgb.tif", "--out", str(o)], timeout)
        res[f"app_{d}_run"] = run
        if run["exit"] == 0:
            imgs[d] = np.asarray(Image.open(o)).astype(int)
    if len(imgs) == 2:
        diff = np.abs(imgs["cpu"] - imgs[device])
        res["app_max_level_diff"] = int(diff.max())
        res["app_frac_pixels_differing"] = float((diff > 0).mean())
    return res


if __name__ == "__main__":
    sys.exit(main())
