#!/usr/bin/env bash
# Reproduce the shipped prior smollm2-135m-jericho (docs/results/prior_pretraining.md) on a GPU machine:
# walkthrough states of both splits, listwise LoRA pretraining at three learning rates (in parallel), the run with the
# best held-out (training-split) top-1 kept, and the prior-quality benchmark on the evaluation split before and after.
#   PRIORZERO_JERICHO_GAMES=/path/to/jericho-games bash scripts/reproduce_prior.sh [OUT]   (default runs/prior_smollm2)
# About 20 minutes of state building on 2 cores (less on more), 6 minutes of pretraining and 3 of scoring on one H200.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/prior_smollm2}"
PY="${PY:-python}"
mkdir -p "$OUT"
JOBS="${JOBS:-$(( $(nproc) > 2 ? $(nproc) - 1 : 2 ))}"
$PY -m zoo.jericho.priorzero.walkthrough_states --games eval --max-states 60 --jobs "$JOBS" --timeout-s 900
$PY -m zoo.jericho.priorzero.walkthrough_states --games train --max-states 30 --jobs "$JOBS" --timeout-s 120
for LR in 1e-4 3e-4 1e-3; do
  $PY -m zoo.jericho.priorzero.pretrain_prior --llm-path smollm2-135m --max-states-per-game 60 --steps 200 \
      --eval-every 25 --batch-states 16 --max-seconds 330 --device cuda --lr "$LR" --out "$OUT/lr$LR" \
      > "$OUT/pretrain_lr$LR.log" 2>&1 &
done
wait
BEST=$($PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs = {p.parent: json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("lr*/training_record.json")}
print(max(runs, key=lambda d: (runs[d]["heldout_after"]["top1"], runs[d]["heldout_after"]["gold_mass"])))
PY
)
echo "kept $BEST (best held-out top-1)"
$PY bench/prior_quality.py --gpu --llm-path smollm2-135m --score-rule sum --games eval --max-states 60 \
    --json "$OUT/before.json"
$PY bench/prior_quality.py --gpu --llm-path smollm2-135m --adapter "$BEST/adapter" --score-rule sum --games eval \
    --max-states 60 --json "$OUT/after.json"
echo "adapter: $BEST/adapter  record: $BEST/training_record.json"
