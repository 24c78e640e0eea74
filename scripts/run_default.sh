#!/usr/bin/env bash
# Set up (idempotent), render the built-in glyph data set (once), and run the default job:
# configs/glyphs.yaml (B=32, N=5, LwF-style training with herding exemplars) into runs/glyphs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
[ -f data/glyphs/manifest.json ] || .venv/bin/mnemo shards glyphs --out data/glyphs
exec .venv/bin/mnemo train --config configs/glyphs.yaml --run-dir "${RUN_DIR:-runs/glyphs}" "$@"
