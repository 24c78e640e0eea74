#!/usr/bin/env bash
# Set up mnemo on a fresh machine: system packages, a project-local virtual environment at .venv/
# with the pinned stack, and mnemo itself (editable). Idempotent: on a ready machine it checks a
# stamp and returns in seconds without changing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
STAMP=$VENV/.mnemo-setup-stamp
log() { echo "[setup] $*" >&2; }

# Fonts for the built-in glyph data set (Debian packages).
APT_PKGS=(fonts-aenigma fonts-urw-base35 fonts-dejavu-core fonts-dejavu-extra g++)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Which CUDA build of torch: unset = PyPI's default build of torch 2.13.0 (the CUDA 13.0 line, which needs
# an NVIDIA driver >= 580); MNEMO_CUDA=cu128 (or another tag PyTorch publishes for 2.13.0, e.g. cu126)
# takes that build from download.pytorch.org, for clusters whose driver is older (CUDA 12.x runs on
# drivers >= 525). The CPU-only machines here use the default build: it runs on CPU. docs/cluster.md.
CUDA=${MNEMO_CUDA:-}
TORCH_INDEX=()
if [ -n "$CUDA" ]; then
  [[ "$CUDA" =~ ^(cu[0-9]{3}|cpu)$ ]] || { echo "[setup] error: MNEMO_CUDA='$CUDA' is not a build tag like cu128, cu130 or cpu" >&2; exit 2; }
  TORCH_INDEX=(--index-url "https://download.pytorch.org/whl/$CUDA" --extra-index-url https://pypi.org/simple)
fi

want=$( (cat scripts/setup.sh requirements/stack.txt setup.py; echo "cuda=$CUDA") | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/mnemo" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  log "environment is up to date ($VENV)"
  exit 0
fi

PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
# The machine's pip config points at a local CPU-only torch wheel that breaks torchvision; install
# from the package registry only, with pip's cache in its usual stable place.
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_DISABLE_PIP_VERSION_CHECK=1
PIP=("$VENV/bin/python" -m pip --default-timeout=180)
"${PIP[@]}" install -q --upgrade "pip>=24" "setuptools>=70" wheel
log "installing torch 2.13.0 + torchvision 0.28.0 (${CUDA:-the PyPI default} CUDA build; it runs on CPU too)"
"${PIP[@]}" install -q "${TORCH_INDEX[@]}" torch==2.13.0 torchvision==0.28.0
log "installing the pinned stack"
"${PIP[@]}" install -q -r requirements/stack.txt torch==2.13.0
log "installing deepspeed 0.19.8 (no build isolation, no prebuilt ops)"
DS_BUILD_OPS=0 "${PIP[@]}" install -q --no-build-isolation deepspeed==0.19.8 torch==2.13.0
log "installing mnemo (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, torchvision, timm, deepspeed, webdataset, submitit, nvidia.dali; print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__, 'deepspeed', deepspeed.__version__)"
echo "$want" > "$STAMP"
log "done: $VENV/bin/mnemo"
