"""GPU check of the same-bytes invariant: fixed-shape forwards and pipeline runs.

1. model: 24 tiles through ``forward_fixed_shape`` in two different orders must give
   bit-identical per-tile outputs (a tile's bytes depend neither on its companions nor
   on its position); the plain variable-batch forward is reported for comparison; the
   same with a scene's normalisation statistics (--norm scene), which must also come out
   bit-identical when recomputed.
2. pipeline: ``python -m pipeline run --device DEVICE`` on a synthetic scene with
   --batch-size 3, 8, 16 and --block-size 512: identical output bytes expected.
3. app.py on DEVICE vs cpu with TF32 off: 8-bit level differences.

Writes $OUT/gpu_determinism.json (OUT defaults to ./bench_out). Smoke test without a GPU:
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

from pipeline.inference import CUDA_MICRO_BATCH, forward_fixed_shape, pin_threads
from ugatit import ModelConfig, init_checkpoint, load_checkpoint

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=2048, help="synthetic scene side")
    ap.add_argument("--ngf", type=int, default=16)
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", REPO / "bench_out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpudet_"))
    res: dict = {"device": args.device, "micro_batch": CUDA_MICRO_BATCH,
                 "torch": str(torch.__version__)}
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)

    # 1. model-level invariance
    ck_path = init_checkpoint(work / "m.pt", ModelConfig(ngf=args.ngf, n_res=2), seed=1)
    gen = load_checkpoint(ck_path, device=args.device, networks=("genA2B",)).genA2B
    pin_threads(args.device)
    dev = torch.device(args.device)
    x = smooth(24, 256, 0)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
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
                        strict=True) if u is not None) and torch.equal(stats.z, stats_again.z)

    # 2. pipeline bytes across batch and block sizes
    scene = work / "scene.tif"
    write_scene(scene, args.size)
    runs = {}
    for name, extra in (("batch3", ["--batch-size", "3"]), ("batch8", ["--batch-size", "8"]),
                        ("batch16", ["--batch-size", "16"]),
                        ("batch8_block512", ["--batch-size", "8", "--block-size", "512"])):
        out = work / f"{name}.tif"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pipeline", "run", str(scene), str(out),
                            "--model", str(ck_path), "--device", args.device, "-q", *extra],
                           cwd=REPO, capture_output=True, text=True)
        runs[name] = {"exit": p.returncode, "seconds": time.perf_counter() - t0,
                      "digest": raster_digest(out) if p.returncode == 0 else None,
                      "stderr": p.stderr[-400:] if p.returncode else ""}
    digests = {r["digest"] for r in runs.values()}
    res["pipeline_runs"] = runs
    res["pipeline_same_bytes"] = len(digests) == 1 and None not in digests
    # the speed options keep the same bytes for their own value (docs/performance.md)
    for option in (["--precision", "bf16"], ["--channels-last"], ["--compile"]):
        name = option[-1].lstrip("-")
        pair = {}
        for batch in ("8", "40"):
            out = work / f"{name}_{batch}.tif"
            p = subprocess.run([sys.executable, "-m", "pipeline", "run", str(scene), str(out),
                                "--model", str(ck_path), "--device", args.device, "-q",
                                "--batch-size", batch, *option],
                               cwd=REPO, capture_output=True, text=True)
            pair[batch] = raster_digest(out) if p.returncode == 0 else p.stderr[-400:]
        res[f"{name}_same_bytes_batch_8_40"] = pair["8"] == pair["40"] and len(pair["8"]) == 64

    # 3. app.py device vs cpu
    imgs = {}
    for d in dict.fromkeys(["cpu", args.device]):
        o = work / f"app_{d.replace(':', '')}.png"
        p = subprocess.run([sys.executable, "app.py", "--device", d, "--model_path",
                            "checkpoints/eo2sar_demo_ngf8_random.pt", "--img",
                            "tests/data/sn6_rotterdam_eo_rgb.tif", "--out", str(o)],
                           cwd=REPO, capture_output=True, text=True)
        if p.returncode == 0:
            imgs[d] = np.asarray(Image.open(o)).astype(int)
    if len(imgs) == 2:
        diff = np.abs(imgs["cpu"] - imgs[args.device])
        res["app_max_level_diff"] = int(diff.max())
        res["app_frac_pixels_differing"] = float((diff > 0).mean())

    ok = res["fixed_shape_permuted_bitwise_equal"] and res["pipeline_same_bytes"] and all(
        v for k, v in res.items() if k.endswith("_same_bytes_batch_8_40")) and all(
        v for k, v in res.items() if k.startswith("scene_stats_"))
    res["ok"] = bool(ok)
    print(json.dumps(res, indent=1))
    (out_dir / "gpu_determinism.json").write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
