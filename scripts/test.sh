#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The SLURM integration tests start a real one-node cluster on localhost: install its Debian
# packages (no daemons are started here; the tests start and stop their own cluster).
bash scripts/slurm/start_local_slurm.sh --install-only
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
exec .venv/bin/python -m pytest -ra tests "$@"
