#!/usr/bin/env bash
# Choose LwM's β (weight of L_D) and γ (weight of L_AD) on a validation split; LwM's paper gives no
# values. The split is carved out of the glyph TRAIN split (`mnemo holdout`), so the test fonts are
# never seen while choosing. Every (β, γ) pair runs the glyph protocol exemplar-free (LwM's setting);
# the pair with the highest validation Ā wins (ties: lower F). γ=0 is LwF-MC (the sigmoid KD alone),
# the reference LwM must beat.
#
#   bash scripts/experiments/lwm_select.sh
#   BETAS="0.5 1 2" GAMMAS="0 0.5 1 2 4" PER_CLASS=50 bash scripts/experiments/lwm_select.sh
#
# Writes runs/lwm_select/b<β>_g<γ>/ and runs/lwm_select/table.md (rerun: finished pairs are skipped);
# prints the chosen pair. Put it into
# strategy.lwm.beta/gamma (trainer/config.py defaults and the lwm_* recipes) and docs/strategies.md.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/lwm_select}
SRC=${SRC:-data/glyphs}
VAL=${VAL:-data/glyphs_val}
PER_CLASS=${PER_CLASS:-50}   # the same split as mnemonics_select.sh (data/glyphs_val is shared)
RECIPE=${RECIPE:-configs/glyphs.yaml}
BETAS=${BETAS:-"0.5 1 2"}
GAMMAS=${GAMMAS:-"0 0.5 1 2"}
STEP_LR=${STEP_LR:-0.01}   # lr of the incremental steps: LwM's Sec. 5 trains them at 0.01 (phase 0 keeps the recipe's)
EXTRA=${EXTRA:-}
ensure_holdout "$SRC" "$VAL" "$PER_CLASS"
mkdir -p "$OUT"
for b in $BETAS; do
  for g in $GAMMAS; do
    name="b${b}_g${g}"
    if run_complete "$OUT/$name"; then echo "done already: $name"; continue; fi
    echo "=== $name"
    # shellcheck disable=SC2086
    $MNEMO train --config "$RECIPE" --run-dir "$OUT/$name" "data.shards=$VAL" strategy.name=lwm \
      exemplars.per_class=0 "strategy.lwm.beta=$b" "strategy.lwm.gamma=$g" \
      "train.incremental_lr=$STEP_LR" $EXTRA >"$OUT/$name.log" 2>&1 \
      || { echo "FAILED: $name (log: $OUT/$name.log)"; exit 1; }
    grep "average incremental accuracy" "$OUT/$name.log" | tail -1
  done
done
$PYTHON -m analysis.collect_table "$OUT" --out "$OUT/table.md"
cat "$OUT/table.md"
# Rule (analysis/choose_setting.py): the highest validation Ā (ties: lower F) among the settings that
# still learn the new classes, i.e. whose mean new-class accuracy over the incremental phases is at
# least half of the LwF-MC reference's (γ = 0). Without that guard a large γ "wins" by refusing every
# new class: its Ā is then the frozen phase-0 model's (the LwM grid in docs/results.md shows it).
$PYTHON -m analysis.choose_setting "$OUT" --glob 'b*_g*' --guard-reference '*_g0'
