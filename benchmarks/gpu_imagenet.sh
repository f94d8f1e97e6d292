#!/usr/bin/env bash
# Issue 24's GPU check, as one command from the repository root on a machine without network access:
#   bash benchmarks/gpu_imagenet.sh
# benchmarks/gpu_env.sh installs the wheels brought along (in $WHEELS, default .whl) where mlflow, optuna,
# kornia or simplejpeg are missing and puts the repository on PYTHONPATH; then benchmarks/gpu_imagenet.py
# runs within its budget (BENCH_BUDGET_S, default 200 s) and is stopped at 215 s, so the whole command
# stays under 4 minutes. $OUT (default a temporary folder) receives gpu_imagenet.json and log.
# CPU rehearsal with a Pillow stand-in for nvjpeg (rates meaningless, every step exercised):
#   BENCH_FAKE_GPU_DECODE=1 BENCH_DEVICE=cpu BENCH_IMAGES=64 BENCH_BATCH=16 BENCH_EPOCHS=2 bash benchmarks/gpu_imagenet.sh
set -o pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1  # the log comes back even when the command is cut short
source "$(dirname "$0")/gpu_env.sh"
timeout "${LIMIT_S:-215}" python3 benchmarks/gpu_imagenet.py
