#!/usr/bin/env bash
# The README's "Models side by side": random init, the bundled MAE, the bundled refined checkpoint
# and MimCo (pipelines/mimco.ts's default: the refined teacher, the student from the MAE) on the
# bundled data, every frozen-feature task of pipelines/eval.ts, then one --compare table and chart.
#   bash scripts/compare-models.sh            # SEEDS="0 1 2" OUT=runs/compare by default
# MimCo runs already finished under $OUT (their summary.json written) are kept; evaluations read
# their features from the cache when they ran before. Fine-tuning summaries of pipelines/finetune.ts
# are taken where they exist at the paths below (set FINETUNE_* to point elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-runs/compare}
MAE=checkpoints/mae-vit-micro-p4/encoder.safetensors
REFINED=checkpoints/refined-vit-micro-p4/encoder.safetensors
FINETUNE_RANDOM=${FINETUNE_RANDOM:-runs/finetune/random-init/summary.json}
FINETUNE_MAE=${FINETUNE_MAE:-runs/finetune/mae/summary.json}
FINETUNE_REFINED=${FINETUNE_REFINED:-runs/finetune/refined/summary.json}
FINETUNE_MIMCO=${FINETUNE_MIMCO:-runs/finetune/mimco/summary.json}

evaluate() { npx ts-node pipelines/eval.ts --tasks knn,linear,lowshot,kmeans "$@"; }
reports=()
for s in $SEEDS; do
  evaluate --checkpoint none --preset vit-micro-p4 --seed "$s" --label 'random init' --out "$OUT/eval/random-init-s$s"
  reports+=("$OUT/eval/random-init-s$s/report.json")
done
evaluate --checkpoint "$MAE" --label MAE --out "$OUT/eval/mae"
reports+=("$OUT/eval/mae/report.json")
evaluate --checkpoint "$REFINED" --label refined --seed 0 --out "$OUT/eval/refined"
reports+=("$OUT/eval/refined/report.json")
for s in $SEEDS; do
  [ -f "$OUT/mimco-s$s/summary.json" ] || npx ts-node pipelines/mimco.ts --seed "$s" --out "$OUT/mimco-s$s"
  evaluate --checkpoint "$OUT/mimco-s$s/checkpoint/encoder.safetensors" --label MimCo --seed "$s" --out "$OUT/eval/mimco-s$s"
  reports+=("$OUT/eval/mimco-s$s/report.json")
done

finetune=()
for pair in "random init=$FINETUNE_RANDOM" "MAE=$FINETUNE_MAE" "refined=$FINETUNE_REFINED" "MimCo=$FINETUNE_MIMCO"; do
  [ -f "${pair#*=}" ] && finetune+=("$pair")
done
(IFS=,; npx ts-node pipelines/eval.ts --compare "${reports[*]}" --finetune-summaries "${finetune[*]:-}" --finetune-dir none --out "$OUT/compare")
