"""GPU checks of the model core that need a real GPU (run by scripts/gpu_session.sh).

1. A checkpoint saved from CUDA tensors (storages tagged cuda:0) loads in a CPU-only
   process (CUDA_VISIBLE_DEVICES=""), and its output matches the CUDA forward.
2. ``load_checkpoint(..., device="cuda:0")`` time and where the generator lands.
3. ``app.py`` on cuda:0 against cpu with the demo checkpoint (+-1 grey level expected),
   and its one-line error for a GPU index this machine does not have.

Writes $OUT/gpu_model_core.json (OUT defaults to ./bench_out) and prints it.
Run from the repository root: ``python -m scripts.gpu_model_core``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ugatit import ModelConfig, load_checkpoint
from ugatit.networks import NETWORK_NAMES, build_network

DEMO_MODEL = "checkpoints/eo2sar_demo_ngf8_random.pt"
DEMO_IMG = "tests/data/sn6_rotterdam_eo_rgb.tif"
# Runs in a child process that cannot see the GPU: the load must not need CUDA.
CPU_ONLY_LOAD = (
    "import numpy as np, torch, sys; from ugatit import load_checkpoint; "
    "assert not torch.cuda.is_available(); ck = load_checkpoint(sys.argv[1], device='cpu'); "
    "x = torch.from_numpy(np.load(sys.argv[2])); "
    "np.save(sys.argv[3], ck.genA2B(x)[0].detach().numpy())"
)


def cuda_saved_checkpoint(work: Path, res: dict[str, Any]) -> Path:
    """Save CUDA networks with plain torch.save; read them back on a CPU-only process."""
    torch.manual_seed(0)
    cfg = ModelConfig(ngf=16, n_res=2, ndf=16)
    nets = {n: build_network(n, cfg).cuda().eval() for n in NETWORK_NAMES}
    path = work / "cuda_saved.pt"
    torch.save({n: m.state_dict() for n, m in nets.items()}, path)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        ref = nets["genA2B"](x.cuda())[0].cpu()
    np.save(work / "x.npy", x.numpy())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run(
        [sys.executable, "-c", CPU_ONLY_LOAD, str(path), str(work / "x.npy"),
         str(work / "y.npy")], env=env, capture_output=True, text=True,
    )
    res["cuda_saved_loads_on_cpu_only_process"] = p.returncode == 0
    if p.returncode == 0:
        y = torch.from_numpy(np.load(work / "y.npy"))
        res["cuda_saved_cpu_vs_cuda_max_abs"] = float((y - ref).abs().max())
    else:
        res["stderr"] = p.stderr[-800:]
    return path


def load_on_cuda(path: Path, res: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    ck = load_checkpoint(path, device="cuda:0", networks=("genA2B",))
    res["load_on_cuda_s"] = time.perf_counter() - t0
    res["genA2B_device"] = str(next(ck.genA2B.parameters()).device)


def _app(device: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "app.py", "--device", device, "--model_path", DEMO_MODEL,
           "--img", DEMO_IMG, *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def app_cuda_vs_cpu(work: Path, res: dict[str, Any]) -> None:
    outs = {}
    for dev in ("cpu", "cuda:0"):
        out = work / f"app_{dev.replace(':', '')}.png"
        p = _app(dev, "--out", str(out))
        res[f"app_{dev}_exit"] = p.returncode
        if p.returncode == 0:
            outs[dev] = np.asarray(Image.open(out)).astype(int)
        else:
            res[f"app_{dev}_stderr"] = p.stderr[-500:]
    if len(outs) == 2:
        d = np.abs(outs["cpu"] - outs["cuda:0"])
        res["app_cuda_vs_cpu_max_levels"] = int(d.max())
        res["app_cuda_vs_cpu_frac_differing"] = float((d > 0).mean())
    p = _app("cuda:9")
    res["app_cuda9_exit"] = p.returncode
    res["app_cuda9_message"] = p.stderr.strip().splitlines()[-1:]


def main() -> int:
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="eo2sar_core_") as tmp:
        work = Path(tmp)
        path = cuda_saved_checkpoint(work, res)
        load_on_cuda(path, res)
        app_cuda_vs_cpu(work, res)
    print(json.dumps(res, indent=1))
    out = Path(os.environ.get("OUT", "bench_out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_model_core.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
