#!/usr/bin/env bash
# Every figure the cluster estimate needs, in one prepared run of 5 minutes on one GPU (benchmarks/gpu_check/):
# ResNet-18 224 px training img/s at batch 64 and 128 with and without LwF's teacher, engine set-up and first
# step, epoch ends with the real checkpoint, GPU JPEG decode and the loader's CPU side, herding's feature pass,
# copy bandwidths, a full-size exemplar bank beside a training step, host syncs per step, a glyph run killed and
# resumed, a mnemonics outer step at 224 px, and a two-process NCCL run where two GPUs exist. Prints one JSON
# line per check and a table; with OUT set (the device tool's output folder) the results also go to
# $OUT/gpu_check.json, rewritten after every check (a check cut off by its time keeps the figures it had).
# Then: python -m benchmarks.cluster_estimate --from gpu_check.json --inputs
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
exec "$PY" -m benchmarks.gpu_check --budget-s "${MNEMO_GPU_CHECK_BUDGET_S:-300}" ${OUT:+--out "$OUT/gpu_check.json"} "$@"
