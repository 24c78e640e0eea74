#!/usr/bin/env bash
# A refactor changes nothing: run the same short jobs before and after it, on one machine, and compare.
#
#   bash scripts/refactor_check.sh OUT_BEFORE            # at the old commit
#   bash scripts/refactor_check.sh OUT_AFTER             # at the new one
#   .venv/bin/python -m analysis.same_metrics OUT_BEFORE OUT_AFTER   # every run's metrics.json, timings aside
#
# Short glyph runs (16 px, 12 classes: B=6 then 2 phases of 3) through every strategy, every selection and
# exemplar objective, the adjustment, weight transfer, both loaders and two ranks, each a few minutes at most
# with one thread. ONLY="name ..." runs some of them. Runs already complete are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: refactor_check.sh OUT_DIR}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mnemo/torch_extensions}
export OMP_NUM_THREADS=1
MNEMO=${MNEMO:-.venv/bin/mnemo}
[ -f data/glyphs/manifest.json ] || $MNEMO shards glyphs --out data/glyphs
SHORT="data.image_size=16 protocol.num_classes=12 protocol.base_classes=6 protocol.phases=2 train.epochs=2 \
train.base_epochs=2 train.finetune_epochs=1 train.lr_milestones=[1] exemplars.per_class=5 exemplars.group_size=3 \
logging.tensorboard=false data.loader=torch"
# The exemplar level's settings: mnemonics' outer loop, its objectives' and Eq. 10's.
MN="exemplars.optimised.epochs=2 exemplars.optimised.steps_per_epoch=2 exemplars.optimised.unrolled.inner_steps=2 \
exemplars.folds.epochs=2"
MN_UNROLLED="exemplars.optimised.objective=unrolled"
declare -A RUNS=(
  [lwf_herding]="strategy.name=lwf"
  [icarl_random]="strategy.name=icarl exemplars.selection=random"
  [bic_herding]="strategy.name=bic"
  [lucir_herding]="strategy.name=lucir"
  [lwm_herding]="strategy.name=lwm"
  [finetune]="strategy.name=finetune"
  [joint]="strategy.name=joint"
  [lwf_wt]="strategy.name=lwf train.weight_transfer=true"
  [lwf_herding_adjust]="strategy.name=lwf exemplars.adjust_old=true $MN"
  [lwf_prototype]="exemplars.selection=optimised $MN"
  [lwf_features]="exemplars.selection=optimised $MN exemplars.optimised.objective=matching exemplars.optimised.matching.embedders=both"
  [lwf_gradients]="exemplars.selection=optimised $MN exemplars.optimised.objective=matching exemplars.optimised.matching.match=gradients"
  [icarl_unrolled_adjust]="strategy.name=icarl exemplars.selection=optimised exemplars.adjust_old=true $MN $MN_UNROLLED exemplars.optimised.unrolled.start=previous"
  [lwf_unrolled_snapshot]="exemplars.selection=optimised $MN $MN_UNROLLED exemplars.optimised.unrolled.start=snapshot exemplars.optimised.unrolled.meta_data=phase"
  [lwf_dali]="strategy.name=lwf data.loader=dali"
  [bic_png]="strategy.name=bic exemplars.codec=png"
  [lucir_lowres]="strategy.name=lucir exemplars.codec=lowres"
  [lwf_dali_lowres]="strategy.name=lwf data.loader=dali exemplars.codec=lowres exemplars.lowres.encoding=pixels"
  [lwf_two_ranks]="strategy.name=lwf engine.zero_stage=1 --nproc-per-node 2"
)
names=${ONLY:-$(printf '%s\n' "${!RUNS[@]}" | sort)}
for name in $names; do
  run=$OUT/$name
  if grep -q '"status": "complete"' "$run/metrics.json" 2>/dev/null; then continue; fi
  rm -rf "$run"
  mkdir -p "$OUT"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  $MNEMO train --config configs/glyphs.yaml --run-dir "$run" $SHORT ${RUNS[$name]} > "$OUT/$name.log" 2>&1 \
    || { echo "$name: failed, see $OUT/$name.log" >&2; exit 1; }
  echo "$name: $(( $(date +%s) - t0 )) s"
done
