# Sourced by the experiment scripts (never run on its own): the repository root as working directory,
# the DeepSpeed JIT cache in its stable place, the CLI, and the data every glyph experiment needs.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[1]}")/../.."
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
MNEMO=${MNEMO:-.venv/bin/mnemo}
PYTHON=${PYTHON:-.venv/bin/python}
export MNEMO PYTHON
# The paper's exemplar objective (Eq. 8-9) on the optimised selection at the glyph preset (β1 = 10 in [0, 1]
# pixel units, chosen on validation; one outer step an epoch, groups of 6 classes): the rows of docs/results.md
# labelled "the paper's objective". Add it to a script's MNEMONICS to run it. The paper's method in its own form
# is exemplars.selection=mnemonics.
PAPER_GLYPHS="exemplars.optimised.objective=unrolled exemplars.optimised.lr=10 exemplars.optimised.init=random \
exemplars.optimised.momentum=0 exemplars.optimised.augment=false exemplars.optimised.steps_per_epoch=1"
export PAPER_GLYPHS

ensure_glyphs() {     # [src]: the built-in glyph shards
  local src=${1:-data/glyphs}
  [ -f "$src/manifest.json" ] || $MNEMO shards glyphs --out "$src"
}

ensure_holdout() {    # src val per_class: a validation split carved out of src's TRAIN split
  ensure_glyphs "$1"
  [ -f "$2/manifest.json" ] || $MNEMO holdout --src "$1" --out "$2" --per-class "$3"
}

run_complete() {      # run_dir: true when `mnemo train` sealed every phase of it
  grep -q '"status": "complete"' "$1/metrics.json" 2>/dev/null
}
export -f run_complete

train_logged() {      # name arg...: `mnemo arg...` with OMP_NUM_THREADS=$THREADS, its log at $OUT/name.log, its Ā printed
  local name=$1; shift
  echo "=== $name: $MNEMO $*"
  if OMP_NUM_THREADS=$THREADS $MNEMO "$@" >"$OUT/$name.log" 2>&1; then
    echo "$name: $(grep 'average incremental accuracy' "$OUT/$name.log" | tail -1 | sed 's/^[0-9:]* //')"
  else
    echo "FAILED: $name (log: $OUT/$name.log)"; return 1
  fi
}
export -f train_logged

run_specs_table() {   # spec...: `run_one spec` JOBS at a time, then OUT/table.md over seeds; fails if a run did
  local status=0
  printf '%s\n' "$@" | xargs -P "$JOBS" -L1 bash -c 'run_one "$@"' _ || status=1
  $PYTHON -m analysis.collect_table "$OUT" --seeds --out "$OUT/table.md"
  cat "$OUT/table.md"
  return $status
}
