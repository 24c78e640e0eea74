#!/usr/bin/env bash
# Every GPU check of the cluster path in one prepared run of at most 8 minutes on one GPU
# (benchmarks/gpu_check.py): ResNet-18 224 px bf16 img/s on synthetic and on DALI-fed data, DALI mixed
# decode img/s, host syncs per training step, a mnemonics outer step at 224 px (time, peak memory),
# and a two-process NCCL run where two GPUs exist. Prints one JSON line per check and a table; with
# OUT set (the device tool's output folder) the results also go to $OUT/gpu_check.json.
#
#   bash scripts/gpu_check.sh                 # in the project's .venv (bash scripts/setup.sh first)
#   MNEMO_PYTHON=python3 bash scripts/gpu_check.sh
#
# On an offline GPU machine whose python lacks some of the stack, carry wheels in .whl/ (made here by
# scripts/gpu_wheels.sh): they are installed into /tmp/mnemo-site first. DALI's wheel (~450 MB) is too
# large to carry that way; without DALI the dali check says so and the others run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${MNEMO_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mnemo-site .whl/*.whl \
    || { echo "gpu_check: could not install the wheels in .whl/" >&2; exit 2; }
  export PYTHONPATH=/tmp/mnemo-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "gpu_check: nvidia-smi not found"
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
exec "$PY" -m benchmarks.gpu_check --budget-s "${MNEMO_GPU_CHECK_BUDGET_S:-460}" ${OUT:+--out "$OUT/gpu_check.json"} "$@"
