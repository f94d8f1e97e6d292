#!/usr/bin/env bash
# Issue 24's GPU check, as one command on a machine without network access:
#   bash benchmarks/gpu_imagenet.sh            (from the repository root)
# Installs the wheels in $WHEELS (default ../../.whl, as the device tool carries them) into /tmp/site
# when mlflow, optuna, kornia or simplejpeg are missing, then runs benchmarks/gpu_imagenet.py.
# $OUT (default a temporary folder) receives gpu_imagenet.json and log.
set -o pipefail
OUT=${OUT:-$(mktemp -d)}
export OUT PYTHONUNBUFFERED=1
WHEELS=${WHEELS:-../../.whl}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  echo "cpus allowed: $(python3 -c 'import os; print(len(os.sched_getaffinity(0)))'); load: $(cat /proc/loadavg)"
  if ! python3 -c "import mlflow, optuna, kornia, simplejpeg" 2>/dev/null && [ -d "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import torch, numpy, mlflow, optuna, kornia, simplejpeg; print('torch', torch.__version__, 'numpy', numpy.__version__, 'mlflow', mlflow.__version__, 'kornia', kornia.__version__)"
  timeout 290 python3 benchmarks/gpu_imagenet.py
} 2>&1 | tee "$OUT/log"
