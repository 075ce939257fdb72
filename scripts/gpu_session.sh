#!/usr/bin/env bash
# One device session: install carried wheels, run scripts/gpu_check.py, then
# scripts/gpu_model_core.py (the model-core checks that need a real GPU). Results land
# in $OUT (default ./bench_out).
# Usage on a GPU machine with torch but without rasterio/dask: bash scripts/gpu_session.sh
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
python3 -c "import torch, rasterio, dask; print('torch', torch.__version__, 'rasterio', rasterio.__version__, 'dask', dask.__version__)"

timeout 360 python3 -m scripts.gpu_check --device cuda 2>&1 | tee "$OUT/gpu_check.log"

python3 -m scripts.gpu_model_core 2>&1 | tee "$OUT/gpu_model_core.log"
