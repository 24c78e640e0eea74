#!/usr/bin/env bash
# Table 1 of the mnemonics paper at glyph scale: every baseline without ("herding") and with optimised exemplars
# ("ours": exemplars.selection=optimised with the recommended objective + weight transfer; Eq. 10 stays off, as the
# validation split chose, docs/results.md), plus the bounds and LwM exemplar-free, one seed.
#
#   bash scripts/experiments/table1_glyphs.sh            # all runs, then runs/table1/table.md
#   ONLY="lucir_herding lucir_ours" bash scripts/experiments/table1_glyphs.sh
#
# Protocols: configs/glyphs.yaml (B=32, N=5) for every method; LUCIR also on configs/glyphs_b12_25.yaml
# (B=12, N=25). Each run writes runs/table1/<name>/ (resumable: rerunning skips finished runs and
# continues unfinished ones). Extra overrides for every run: EXTRA="key=value ..." (docs/results.md's
# tables use EXTRA="data.image_size=16"); extra settings for "ours": MNEMONICS="..." (default: none, i.e. the
# recommended objective). The paper's plug-in (its objective at the glyph preset, β1 = β2 = 10, with Eq. 10):
# MNEMONICS="$PAPER_GLYPHS exemplars.adjust_old=true" (common.sh).
# The table (Ā, F, runtime from metrics.json wall_s): python -m analysis.collect_table runs/table1
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/table1}
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
MNEMONICS=${MNEMONICS:-}
HERDING="exemplars.selection=herding"
FREE="exemplars.per_class=0 train.incremental_lr=0.01"   # exemplar-free, LwM's step lr
OURS="exemplars.selection=optimised train.weight_transfer=true $MNEMONICS"
ensure_glyphs

# name | recipe | overrides
RUNS=(
  "lwf_herding|configs/glyphs.yaml|strategy.name=lwf $HERDING"
  "lwf_ours|configs/glyphs.yaml|strategy.name=lwf $OURS"
  "icarl_herding|configs/glyphs.yaml|strategy.name=icarl $HERDING"
  "icarl_ours|configs/glyphs.yaml|strategy.name=icarl $OURS"
  "bic_herding|configs/glyphs.yaml|strategy.name=bic $HERDING"
  "bic_ours|configs/glyphs.yaml|strategy.name=bic $OURS"
  "lucir_herding|configs/glyphs.yaml|strategy.name=lucir $HERDING"
  "lucir_ours|configs/glyphs.yaml|strategy.name=lucir $OURS"
  "lucir_b12_25_herding|configs/glyphs_b12_25.yaml|strategy.name=lucir $HERDING"
  "lucir_b12_25_ours|configs/glyphs_b12_25.yaml|strategy.name=lucir $OURS"
  "finetune|configs/glyphs.yaml|strategy.name=finetune"
  "lwm_exemplar_free|configs/glyphs.yaml|strategy.name=lwm $FREE"
  "lwf_mc_exemplar_free|configs/glyphs.yaml|strategy.name=lwm strategy.lwm.gamma=0 $FREE"
  "joint|configs/glyphs.yaml|strategy.name=joint"
)

mkdir -p "$OUT"
status=0
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name recipe overrides <<<"$spec"
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  echo "=== $name: $MNEMO train --config $recipe --run-dir $OUT/$name seed=$SEED $overrides $EXTRA"
  # shellcheck disable=SC2086  # overrides are word lists on purpose
  if $MNEMO train --config "$recipe" --run-dir "$OUT/$name" "seed=$SEED" $overrides $EXTRA >"$OUT/$name.log" 2>&1; then
    grep "average incremental accuracy" "$OUT/$name.log" | tail -1 || true
  else
    echo "FAILED: $name (log: $OUT/$name.log)"; status=1
  fi
done
$PYTHON -m analysis.collect_table "$OUT" --out "$OUT/table.md"
cat "$OUT/table.md"
exit $status
