#!/usr/bin/env bash
# Exemplars per byte, on a validation split: herding with each storage form of the memory (`exemplars.codec`) at
# the bytes of the budget's original images, beside raw herding (today's memory), paired by seed. The rule that
# picks the default is docs/results-record.md's ("Exemplars per byte"), written before these runs.
#
#   bash scripts/experiments/codec_select.sh
#   SEEDS="0 1 2" RECIPE=configs/glyphs_b12_25.yaml OUT=runs/codec_select_b12 bash scripts/experiments/codec_select.sh
#   CODECS="png:codec=png" SELECTION=optimised bash scripts/experiments/codec_select.sh
#
# A form is NAME:key=value,key=value over the exemplars section (codec=lowres, lowres.factor=4, ...). Every seed
# trains phase 0 once (raw_s<seed>, herding as the memory stood before codecs) and each form's run of that seed
# starts from it (`train.base_from`), so a difference is paired. BASE=own trains each form's phase 0 itself instead
# (paired by seed, not by phase 0). Runs go JOBS at a time, THREADS threads each, and
# resume (finished runs are skipped). Writes OUT/<name>_s<seed>/ and OUT/table.md (mean ± std over seeds); the
# paired differences against raw: `python -m analysis.paired OUT raw` (below).
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/codec_select}
SRC=${SRC:-data/glyphs}
VAL=${VAL:-data/glyphs_val}
PER_CLASS=${PER_CLASS:-50}
RECIPE=${RECIPE:-configs/glyphs.yaml}
SEEDS=${SEEDS:-"0 1 2"}
SELECTION=${SELECTION:-herding}
# the rule's candidates at 16 px, as amended before its runs finished (results-record.md)
CODECS=${CODECS:-"png:codec=png lowres2px:codec=lowres,lowres.encoding=pixels"}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
EXTRA=${EXTRA-data.image_size=16}        # the rule ran at 16 px; EXTRA= (empty) runs the recipe's 32
ensure_holdout "$SRC" "$VAL" "$PER_CLASS"
mkdir -p "$OUT"

run_one() {   # name seed [base] [key=value ...]
  local name=$1 seed=$2 base=${3:-}; shift 3 || shift $#
  if run_complete "$OUT/$name"; then echo "done already: $name"; return 0; fi
  local args=(train --config "$RECIPE" --run-dir "$OUT/$name" "data.shards=$VAL" "seed=$seed")
  [ -n "$base" ] && [ "$base" != - ] && args+=("train.base_from=$base")
  # shellcheck disable=SC2206  # word lists on purpose
  args+=("$@" $EXTRA)
  train_logged "$name" "${args[@]}"
}
export -f run_one
export MNEMO OUT VAL RECIPE THREADS EXTRA

# 1. one phase-0 training per seed: raw herding
printf '%s\n' $SEEDS | xargs -P "$JOBS" -I{} bash -c 'run_one raw_s{} {} - exemplars.selection=herding'
# 2. every form of each seed from that seed's phase 0
specs=()
for form in $CODECS; do
  name=${form%%:*}; kv=${form#*:}
  for seed in $SEEDS; do
    base=$OUT/raw_s$seed; [ "${BASE:-raw}" = own ] && base=-
    specs+=("${name}_s$seed $seed $base exemplars.selection=$SELECTION $(echo "$kv" | tr ',' '\n' \
      | sed 's/^/exemplars./' | paste -sd' ')")
  done
done
status=0
run_specs_table "${specs[@]}" || status=1
$PYTHON -m analysis.paired "$OUT" raw
exit $status
