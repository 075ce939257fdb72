# Sourced by the GPU session scripts: $OUT made, the carried wheels (.whl/) installed when
# the machine lacks rasterio / dask / pystac (device machines have torch only), PYTHONPATH
# set, the card printed.
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if ! python3 -c "import rasterio, dask.distributed, pystac" 2>/dev/null; then
  timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD PYTHONUNBUFFERED=1
# each step has its own timeout: a hung install or driver query must not eat the budget
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || echo "no nvidia-smi (a CPU smoke run?)"
