#!/usr/bin/env bash
# Choose the optimised selection's exemplar-level learning rates on a validation split, never the test fonts.
# The split is carved out of the glyph TRAIN split (`mnemo holdout`); every setting runs the glyph
# protocol with optimised exemplars (exemplars.selection=optimised, no adjustment) from one shared phase 0 trained on that split,
# beside random (mnemonics' initialisation) and herding (the base run itself) as references.
#
#   bash scripts/experiments/mnemonics_select.sh
#   SETTINGS="b0.5:lr=0.5 b5:lr=5" EXTRA="data.image_size=16" JOBS=2 bash scripts/experiments/mnemonics_select.sh
#
# A setting is NAME:key=value,key=value over the exemplars section (lr = β1 is exemplars.optimised.lr; a key
# with a dot names its section below exemplars: unrolled.inner_lr = α2, folds.lr = β2), on top of MNEMONICS
# (overrides for every optimised run; default none: the recommended objective, whose β1 grid is the default
# SETTINGS). The searches of docs/results.md on the paper's objective ran with MNEMONICS="$PAPER_GLYPHS"
# (scripts/experiments/common.sh), e.g. β2 with adjustment on (no β2 helps):
#   MNEMONICS="$PAPER_GLYPHS" EXTRA="data.image_size=16 exemplars.adjust_old=true" \
#   SETTINGS="a10:lr=10,folds.lr=10 a1:lr=10,folds.lr=1 a0.1:lr=10,folds.lr=0.1" bash scripts/...
# and T, real batches per step and the BatchNorm regime of Θ':
#   MNEMONICS="$PAPER_GLYPHS" BASE_THREADS=1 EXTRA="data.image_size=16" SETTINGS="b10:lr=10 \
#     T25:unrolled.inner_steps=25 vb4:val_batches=4 vbn_running:unrolled.val_bn=running \
#     bn_frozen:unrolled.val_bn=running,unrolled.inner_bn=running group:unrolled.meta_loss=group \
#     hinit:init=herding" bash scripts/...
# Writes OUT/<name>/ and OUT/table.md; the setting with the highest validation Ā wins
# (analysis/choose_setting.py; herding and random are shown as references).
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/mnemonics_select}
SRC=${SRC:-data/glyphs}
VAL=${VAL:-data/glyphs_val}
PER_CLASS=${PER_CLASS:-50}
RECIPE=${RECIPE:-configs/glyphs.yaml}
SEED=${SEED:-0}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
EXTRA=${EXTRA:-}
SETTINGS=${SETTINGS:-"b0.5:lr=0.5 b5:lr=5 b50:lr=50"}
MNEMONICS=${MNEMONICS:-}
ensure_holdout "$SRC" "$VAL" "$PER_CLASS"
mkdir -p "$OUT"

run_one() {   # name selection [key=value ...]
  local name=$1 sel=$2; shift 2
  if run_complete "$OUT/$name"; then echo "done already: $name"; return 0; fi
  local base=()
  [ "$name" != herding ] && base=("train.base_from=$OUT/herding")
  # shellcheck disable=SC2206
  local args=(train --config "$RECIPE" --run-dir "$OUT/$name" "data.shards=$VAL" "seed=$SEED"
              "exemplars.selection=$sel" "${base[@]}" "$@" $EXTRA)
  echo "=== $name: $MNEMO ${args[*]}"
  OMP_NUM_THREADS=$THREADS $MNEMO "${args[@]}" >"$OUT/$name.log" 2>&1 || { echo "FAILED: $name ($OUT/$name.log)"; return 1; }
  echo "$name: $(grep 'average incremental accuracy' "$OUT/$name.log" | tail -1 | sed 's/^[0-9:]* //')"
}
export -f run_one
export MNEMO OUT VAL SEED RECIPE THREADS EXTRA

THREADS=${BASE_THREADS:-2} run_one herding herding   # the shared phase 0 (and the herding reference), alone
specs=()
for s in $SETTINGS; do
  name=${s%%:*}; kv=${s#*:}
  specs+=("$name optimised $MNEMONICS $(echo "$kv" | tr ',' '\n' \
    | sed -E 's/^(folds\.)/exemplars.\1/; /^exemplars\./!s/^/exemplars.optimised./' | paste -sd' ')")
done
specs+=("random random")
printf '%s\n' "${specs[@]}" | xargs -P "$JOBS" -L1 bash -c 'run_one "$@"' _
$PYTHON -m analysis.collect_table "$OUT" --out "$OUT/table.md"
cat "$OUT/table.md"
grep -h "exemplar select" "$OUT"/*.log | sed 's/^[0-9:]* //' | head -40
$PYTHON -m analysis.choose_setting "$OUT" --not-candidate herding random
