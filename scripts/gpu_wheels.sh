#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on an offline GPU machine whose python (3.12 by default) already has
# torch, timm, numpy, pillow, pyyaml, psutil, msgpack, ninja, einops, tqdm and packaging but not the
# rest of mnemo's stack. Writes .whl/ (ignored by git; carry it to the machine). DALI is left out: its
# wheel (~450 MB) is larger than what such a machine can be sent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${MNEMO_WHEEL_PYTHON:-3.12}
# pydantic and pydantic-core come as a matched pair (a mismatched one breaks DeepSpeed's import, and every check
# with it): the pair of requirements/stack.txt
PYDANTIC=$(sed -n 's/^pydantic==\([^ ]*\).*/\1/p' requirements/stack.txt)
PYDANTIC_CORE=$(sed -n 's/^pydantic[-_]core==\([^ ]*\).*/\1/p' requirements/stack.txt)
[ -n "$PYDANTIC" ] && [ -n "$PYDANTIC_CORE" ] || { echo "gpu_wheels: requirements/stack.txt pins no pydantic pair" >&2; exit 2; }
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLAT[@]}" \
  -d .whl hjson py-cpuinfo "pydantic==$PYDANTIC" "pydantic-core==$PYDANTIC_CORE" annotated-types typing-inspection typing-extensions \
  webdataset==1.0.2 braceexpand submitit==1.5.4 cloudpickle
# DeepSpeed is published as a source distribution only; its wheel is pure Python (ops build at run time)
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8 2>/dev/null \
  || .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
du -sh .whl
