#!/usr/bin/env bash
# The GPU measurements of issues 8 and 16 in ONE device call of at most ~9 minutes
# (docs/performance.md, BENCHMARKS.md); a lent machine has 15 minutes in all, starting
# it included, and at most 10 minutes per command:
#   1. scripts/gpu_determinism.py (<= 200 s): the same bytes across --batch-size 32/64/96
#      and --block-size, and for --precision bf16, --channels-last and --compile each
#      across batch sizes; every subprocess has its own timeout (60 s);
#   2. benchmarks/bench_speed.py --gpu-only (<= 330 s, its own budget 240 s): model-only
#      tiles/s per precision and option at micro-batch 32 (compile time apart), the
#      convolution ceiling, and a Sentinel-2-like scene of 5490 x 5490 x 3 uint16 (a
#      quarter of a 10980 px tile, ~840 tiles; the full tile's time is estimated by area)
#      end to end with the GPU busy fraction, after a warm-up run of the same options.
# Both write their JSON after every section ($OUT/gpu_determinism.json, speed_gpu.json,
# `partial` / `sections_done`), so a command cut short still returns what it measured.
# Usage on a GPU machine that has torch but not the rest (the device tool's machines): put
# the wheels of rasterio, dask, distributed, shapely, pystac, jsonschema (and their
# dependencies) in .whl/ (`pip download -d .whl ...` on a machine with the same Python),
# carry .whl, then: OUT=$OUT bash scripts/gpu_speed_session.sh
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
DEVICE=${DEVICE:-cuda}
timeout 200 python3 -m scripts.gpu_determinism --device "$DEVICE" --subprocess-timeout 60 \
  2>&1 | tail -40 | tee "$OUT/gpu_determinism.log"
timeout 330 python3 -m benchmarks.bench_speed --gpu-only --gpu-device "$DEVICE" --seconds 5 \
  --s2-size "${S2_SIZE:-5490}" --budget-s 240 --out "$OUT" 2>&1 | tee "$OUT/speed_gpu.log"
ls -l "$OUT"
