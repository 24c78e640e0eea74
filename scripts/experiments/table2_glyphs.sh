#!/usr/bin/env bash
# Table 2 of the mnemonics paper at glyph scale: exemplar selection (random / herding / optimised, and
# mnemonics: the paper's method in its form), each without and with the adjustment of old exemplars (Eq. 10),
# over several seeds; LwF-style training (configs/glyphs.yaml's strategy). Mean ± std of Ā and F per row.
#
#   bash scripts/experiments/table2_glyphs.sh
#   VARIANTS=mnemonics EXTRA="data.image_size=16" bash scripts/experiments/table2_glyphs.sh   # the paper's rows
#   SEEDS="0 1 2" VARIANTS="optimised herding random" ADJ="true false" JOBS=2 \
#     ADJ_SEEDS="0" EXTRA="data.image_size=16" RECIPE=configs/glyphs_b12_25.yaml OUT=runs/table2_b12 bash scripts/...
#
# Every seed trains phase 0 once (the "herding, no adjustment" run) and the other rows of that seed
# start from its phase 0 (`train.base_from`): phase-0 training does not depend on the exemplar level.
# Runs go JOBS at a time with OMP_NUM_THREADS=THREADS each (default 2 x 1 thread on a 2-core box);
# every run writes OUT/<variant>_<adj|noadj>_s<seed>/ and is resumable (rerun: finished runs are
# skipped). MNEMONICS: the exemplar-level settings (default: none, the recommended objective; the paper's
# objective at the glyph preset: MNEMONICS="$PAPER_GLYPHS", common.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/table2}
RECIPE=${RECIPE:-configs/glyphs.yaml}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"optimised herding random"}   # (longest first: better packing over JOBS)
ADJ=${ADJ:-"true false"}
ADJ_SEEDS=${ADJ_SEEDS:-$SEEDS}      # seeds that also run the (expensive) adjustment rows
MNEMONICS_SEEDS=${MNEMONICS_SEEDS:-$SEEDS}
BASES=${BASES:-$OUT}                # where the per-seed phase-0 runs live (share them between OUT dirs)
SKIP=${SKIP:-}                      # rows to leave out, e.g. "random_adj" (names <selection>_<adj|noadj>)
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
EXTRA=${EXTRA:-}
MNEMONICS=${MNEMONICS:-}
ensure_glyphs
mkdir -p "$OUT"

run_one() {   # name seed selection adjust [base]
  local name=$1 seed=$2 sel=$3 adj=$4 base=${5:-}
  if run_complete "$OUT/$name"; then echo "done already: $name"; return 0; fi
  local args=(train --config "$RECIPE" --run-dir "$OUT/$name" "seed=$seed" "exemplars.selection=$sel"
              "exemplars.adjust_old=$adj")
  [ -n "$base" ] && args+=("train.base_from=$base")
  # shellcheck disable=SC2206  # word lists on purpose
  args+=($MNEMONICS $EXTRA)
  train_logged "$name" "${args[@]}"
}
export -f run_one
export MNEMO OUT RECIPE THREADS EXTRA MNEMONICS

# 1. one phase-0 training per seed (the herding, no-adjustment row)
printf '%s\n' $SEEDS | OUT=$BASES xargs -P "$JOBS" -I{} bash -c 'run_one herding_noadj_s{} {} herding false'
# 2. every other row of each seed from that seed's phase 0
specs=()
for adj in $ADJ; do
  for sel in $VARIANTS; do
    for seed in $SEEDS; do
      tag=$([ "$adj" = true ] && echo adj || echo noadj)
      [ "$sel-$adj" = herding-false ] && continue
      [[ " $SKIP " == *" ${sel}_${tag} "* ]] && continue
      [ "$adj" = true ] && [[ " $ADJ_SEEDS " != *" $seed "* ]] && continue
      [[ "$sel" = optimised || "$sel" = mnemonics ]] && [[ " $MNEMONICS_SEEDS " != *" $seed "* ]] && continue
      specs+=("${sel}_${tag}_s$seed $seed $sel $adj $BASES/herding_noadj_s$seed")
    done
  done
done
run_specs_table "${specs[@]}"
