# Sourced by the GPU scripts (gpu_imagenet.sh, gpu_records.sh): the set-up a bare GPU machine without
# network access needs. Installs the wheels in $WHEELS (default .whl at the repository root, where the
# device tool carries them) into /tmp/site when mlflow, optuna, kornia or simplejpeg are missing, puts
# the repository on PYTHONPATH and prints the machine. The tree travels without .git: export
# HARNESS_SOURCE_COMMIT to name its commit in the records. $OUT (default a temporary folder) receives
# what the scripts write.
OUT=${OUT:-$(mktemp -d)}
export OUT PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WHEELS=${WHEELS:-.whl}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
echo "cpus allowed: $(python3 -c 'import os; print(len(os.sched_getaffinity(0)))'); load: $(cat /proc/loadavg)"
if ! python3 -c "import mlflow, optuna, kornia, simplejpeg" 2>/dev/null && [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, numpy, mlflow, optuna, kornia, simplejpeg; print('torch', torch.__version__, 'numpy', numpy.__version__, 'mlflow', mlflow.__version__, 'kornia', kornia.__version__)"
