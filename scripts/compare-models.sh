#!/usr/bin/env bash
# docs/evaluation.md "Models side by side": random init, the bundled MAE, refined encoders (the bundled
# refined checkpoint is seed 0) and MimCo (pipelines/mimco.ts's default: the refined teacher, the
# student from the MAE) on the bundled data, every frozen-feature task of pipelines/eval.ts, 10%
# fine-tuning, then one --compare table and chart. Two more rows test MimCo's own claim at equal data: a MimCo student from scratch
# and an MAE from scratch, each 2 epochs of the bundled train images (seed 0).
#   bash scripts/compare-models.sh            # SEEDS="0 1 2" OUT=runs/compare by default
# Runs already finished under $OUT (their summary.json written) are kept; evaluations read their
# features from the cache when they ran before. FINETUNE=0 skips fine-tuning.
set -euo pipefail
case "${1:-}" in
  '') ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "error: compare-models.sh takes no arguments (got '$1'); set SEEDS, OUT or FINETUNE in the environment (--help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-runs/compare}
MAE=checkpoints/mae-vit-micro-p4/encoder.safetensors
REFINED=checkpoints/refined-vit-micro-p4/encoder.safetensors
FINETUNE=${FINETUNE:-1}

evaluate() { npx ts-node pipelines/eval.ts --tasks knn,linear,lowshot,kmeans "$@"; }
reports=()
for s in $SEEDS; do
  evaluate --checkpoint none --preset vit-micro-p4 --seed "$s" --label 'random init' --out "$OUT/eval/random-init-s$s"
  reports+=("$OUT/eval/random-init-s$s/report.json")
done
evaluate --checkpoint "$MAE" --label MAE --out "$OUT/eval/mae"
reports+=("$OUT/eval/mae/report.json")
# refined: seed 0 is the bundled refined checkpoint (npm run refine's default, seed 0), other seeds are refined here
for s in $SEEDS; do
  if [ "$s" = 0 ]; then ckpt=$REFINED; else
    ckpt="$OUT/refine-s$s/checkpoint/encoder-ema.safetensors"
    [ -f "$OUT/refine-s$s/summary.json" ] || npx ts-node pipelines/refine.ts --seed "$s" --out "$OUT/refine-s$s"
  fi
  evaluate --checkpoint "$ckpt" --label refined --seed "$s" --out "$OUT/eval/refined-s$s"
  reports+=("$OUT/eval/refined-s$s/report.json")
done
for s in $SEEDS; do
  [ -f "$OUT/mimco-s$s/summary.json" ] || npx ts-node pipelines/mimco.ts --seed "$s" --out "$OUT/mimco-s$s"
  evaluate --checkpoint "$OUT/mimco-s$s/checkpoint/encoder.safetensors" --label MimCo --seed "$s" --out "$OUT/eval/mimco-s$s"
  reports+=("$OUT/eval/mimco-s$s/report.json")
done
# equal data: 2 epochs of the bundled train images from scratch, MimCo (refined teacher) against MAE (the bundled MAE's recipe)
[ -f "$OUT/mimco-scratch-s0/summary.json" ] || npx ts-node pipelines/mimco.ts --checkpoint none --seed 0 --out "$OUT/mimco-scratch-s0"
evaluate --checkpoint "$OUT/mimco-scratch-s0/checkpoint/encoder.safetensors" --label 'MimCo, from scratch' --seed 0 --out "$OUT/eval/mimco-scratch-s0"
reports+=("$OUT/eval/mimco-scratch-s0/report.json")
[ -f "$OUT/mae-2ep-s0/checkpoint/encoder.safetensors" ] ||
  npx ts-node pipelines/pretrain-mae.ts --epochs 2 --batch 128 --lr 2e-3 --lr-scaling linear --warmup-share 0.1 --seed 0 --out "$OUT/mae-2ep-s0"
evaluate --checkpoint "$OUT/mae-2ep-s0/checkpoint/encoder.safetensors" --label 'MAE, same images' --seed 0 --out "$OUT/eval/mae-2ep-s0"
reports+=("$OUT/eval/mae-2ep-s0/report.json")

# fine-tuning on 10% of the labels (seeds 0-2; random init seed 0 only) with the schedule docs/finetune.md chose on
# validation (16 epochs, lr 1e-3): the checkpoint chosen on validation, test once
finetune=()
if [ "$FINETUNE" = 1 ]; then
  for pair in "random init=none" "MAE=$MAE" "refined=$REFINED" "MimCo=$OUT/mimco-s0/checkpoint/encoder.safetensors"; do
    label=${pair%%=*}; dir="$OUT/finetune/${label// /-}"
    seeds=0,1,2; [ "$label" = "random init" ] && seeds=0
    [ -f "$dir/summary.json" ] || npx ts-node pipelines/finetune.ts --checkpoint "${pair#*=}" --preset vit-micro-p4 --label "$label" --label-share 10% --epochs 16 --val-evals 4 --lr 1e-3 --seed $seeds --out "$dir"
    finetune+=("$label=$dir/summary.json")
  done
fi
(IFS=,; npx ts-node pipelines/eval.ts --compare "${reports[*]}" --finetune-summaries "${finetune[*]:-}" --finetune-dir none --out "$OUT/compare")
