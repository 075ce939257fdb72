#!/usr/bin/env bash
# One device session: install carried wheels, run scripts/gpu_check.py, then
# scripts/gpu_model_core.py (the model-core checks that need a real GPU). Results land
# in $OUT (default ./bench_out).
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

timeout 360 python3 -m scripts.gpu_check --device cuda 2>&1 | tee "$OUT/gpu_check.log"

python3 -m scripts.gpu_model_core 2>&1 | tee "$OUT/gpu_model_core.log"
