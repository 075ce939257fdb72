#!/usr/bin/env bash
# Issue 8's GPU measurements in one device call (docs/performance.md, BENCHMARKS.md):
#   1. scripts/gpu_determinism.py: the same bytes across --batch-size / --block-size, and for
#      --precision bf16, --channels-last and --compile each across batch sizes;
#   2. benchmarks/bench_speed.py --gpu-only: model-only tiles/s per precision and option at
#      the default micro-batch (32), the convolution ceiling, and a Sentinel-2-sized synthetic
#      scene (10980 x 10980 x 3 uint16) end to end with the GPU busy fraction.
# Usage on a GPU machine that has torch but not the rest (the device tool's machines): put
# the wheels of rasterio, dask, distributed, shapely, pystac, jsonschema (and their
# dependencies) in .whl/ (`pip download -d .whl ...` on a machine with the same Python),
# carry .whl, then: OUT=$OUT bash scripts/gpu_speed_session.sh   (about 6-8 minutes on an H100)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
timeout 180 python3 -m scripts.gpu_determinism --device cuda 2>&1 | tail -30 | tee "$OUT/gpu_determinism.log"
timeout 390 python3 -m benchmarks.bench_speed --gpu-only --seconds 10 --out "$OUT" 2>&1 \
  | tee "$OUT/speed_gpu.log"
