#!/usr/bin/env bash
# One device session: install carried wheels, run scripts/gpu_check.py, then the checks
# of the model core that need a real GPU (CUDA-saved checkpoint read on a CPU-only
# process, app.py on cuda:0 against cpu). Results land in $OUT (default ./bench_out).
# Usage on a GPU machine with torch but without rasterio/dask: bash scripts/gpu_session.sh
set -uo pipefail
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if ! python3 -c "import rasterio, dask.distributed" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, rasterio, dask; print('torch', torch.__version__, 'rasterio', rasterio.__version__, 'dask', dask.__version__)"

timeout 360 python3 scripts/gpu_check.py --device cuda 2>&1 | tee "$OUT/gpu_check.log"

python3 - <<'PY' 2>&1 | tee "$OUT/gpu_model_core.log"
import json, os, subprocess, sys, tempfile, time
import numpy as np, torch
from PIL import Image
from ugatit import ModelConfig, load_checkpoint
from ugatit.networks import NETWORK_NAMES, build_network
res = {}
work = tempfile.mkdtemp()
# 1. a checkpoint saved from CUDA tensors (storages tagged cuda:0), read by a CPU-only process
torch.manual_seed(0)
cfg = ModelConfig(ngf=16, n_res=2, ndf=16)
nets = {n: build_network(n, cfg).cuda().eval() for n in NETWORK_NAMES}
path = os.path.join(work, "cuda_saved.pt")
torch.save({n: m.state_dict() for n, m in nets.items()}, path)
x = torch.rand(1, 3, 256, 256) * 2 - 1
with torch.inference_mode():
    ref = nets["genA2B"](x.cuda())[0].cpu()
np.save(os.path.join(work, "x.npy"), x.numpy())
code = ("import numpy as np, torch, sys; from ugatit import load_checkpoint; "
        "assert not torch.cuda.is_available(); ck = load_checkpoint(sys.argv[1], device='cpu'); "
        "x = torch.from_numpy(np.load(sys.argv[2])); "
        "np.save(sys.argv[3], ck.genA2B(x)[0].detach().numpy())")
env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
p = subprocess.run([sys.executable, "-c", code, path, os.path.join(work, "x.npy"),
                    os.path.join(work, "y.npy")], env=env, capture_output=True, text=True)
res["cuda_saved_loads_on_cpu_only_process"] = p.returncode == 0
if p.returncode == 0:
    y = torch.from_numpy(np.load(os.path.join(work, "y.npy")))
    res["cuda_saved_cpu_vs_cuda_max_abs"] = float((y - ref).abs().max())
else:
    res["stderr"] = p.stderr[-800:]
# 2. load_checkpoint on cuda directly
t0 = time.perf_counter(); ck = load_checkpoint(path, device="cuda:0", networks=("genA2B",))
res["load_on_cuda_s"] = time.perf_counter() - t0
res["genA2B_device"] = str(next(ck.genA2B.parameters()).device)
# 3. app.py on cuda:0 vs cpu with the demo checkpoint (+-1 level expected)
outs = {}
for dev in ("cpu", "cuda:0"):
    o = os.path.join(work, f"app_{dev.replace(':', '')}.png")
    p = subprocess.run([sys.executable, "app.py", "--device", dev, "--model_path",
                        "checkpoints/eo2sar_demo_ngf8_random.pt", "--img",
                        "tests/data/sn6_rotterdam_eo_rgb.tif", "--out", o],
                       capture_output=True, text=True)
    res[f"app_{dev}_exit"] = p.returncode
    if p.returncode == 0:
        outs[dev] = np.asarray(Image.open(o)).astype(int)
    else:
        res[f"app_{dev}_stderr"] = p.stderr[-500:]
if len(outs) == 2:
    d = np.abs(outs["cpu"] - outs["cuda:0"])
    res["app_cuda_vs_cpu_max_levels"] = int(d.max())
    res["app_cuda_vs_cpu_frac_differing"] = float((d > 0).mean())
p = subprocess.run([sys.executable, "app.py", "--device", "cuda:9", "--model_path",
                    "checkpoints/eo2sar_demo_ngf8_random.pt", "--img",
                    "tests/data/sn6_rotterdam_eo_rgb.tif"], capture_output=True, text=True)
res["app_cuda9_exit"] = p.returncode
res["app_cuda9_message"] = p.stderr.strip().splitlines()[-1:] 
print(json.dumps(res, indent=1))
json.dump(res, open(os.path.join(os.environ.get("OUT", "bench_out"), "gpu_model_core.json"), "w"), indent=1)
PY
