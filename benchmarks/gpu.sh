#!/usr/bin/env bash
# Every `--device cuda` figure of the benchmarks on one GPU, in under 8 minutes, written to one JSON:
#   bash benchmarks/gpu.sh [OUT.json] [options of `python -m benchmarks.gpu`, e.g. --peak-tflops 989]
# (or `make bench-gpu`). Builds .venv from the lock file first when it is missing. The run is capped at
# 7.5 minutes: it rewrites the JSON after each figure, so what was measured by then is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
out="gpu_results.json"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
[ -x .venv/bin/python ] || make venv
export CUBLAS_WORKSPACE_CONFIG=":4096:8" RAY_USAGE_STATS_ENABLED=0 DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout --signal=INT --kill-after=20 450 .venv/bin/python -m benchmarks.gpu --device cuda --out "$out" "$@"
