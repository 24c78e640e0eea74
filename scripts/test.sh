#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The SLURM integration tests start a real one-node cluster on localhost: install its Debian
# packages (no daemons are started here; the tests start and stop their own cluster).
bash scripts/slurm/start_local_slurm.sh --install-only
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
# Two workers, one test file each at a time (--dist loadfile keeps a file's module fixtures, such as a shared
# two-rank run, built once): every test process runs one thread (tests/conftest.py), so the suite uses both
# cores of a 2-core machine. MNEMO_TEST_WORKERS=0 runs it in this process alone (e.g. under a debugger).
exec .venv/bin/python -m pytest -ra -n "${MNEMO_TEST_WORKERS:-2}" --dist loadfile tests "$@"
