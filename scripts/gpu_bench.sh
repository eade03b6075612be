#!/usr/bin/env bash
# One command for the benchmarks on the GPU machine (Python 3.12, torch/transformers/peft present, no internet, no
# lightzero/DI-engine/jericho). Results go to $OUT (default ./gpu_bench_out): speed.md, learning.csv, learning.png,
# learning.md, env.txt and a log of each phase.
#
# Here, once (CPython 3.11 venv made by `make setup`):
#   bash scripts/prepare_gpu_bundle.sh          # .cache/gpu_jericho, .cache/gpu_site, .cache/gpu_whl312
#   bash scripts/gpu_bench.sh --prepare-games    # copies detective.z5 and zork1.z5 into .cache/gpu_games (ignored)
# There, from the repository root, with those four .cache folders next to the tree:
#   bash scripts/gpu_bench.sh [all|speed|learning]     # all (default) is cut to fit 10 minutes; one phase: 9.5
#
# speed: bench/speed.py on detective at LightZero's Jericho UniZero anchor sizes (docs: ../shared/docs/gpu-notes.md):
#   50 simulations, batch 64, 512-token observations, a MiniLM-sized text encoder (384 wide, 6 layers, 12 heads),
#   world model embed 768 / 2 layers, 16 collector envs, replay ratio 0.25 (16 world-model updates per 64 env
#   steps), and the prior a random-initialised Qwen2.5-0.5B-shaped LLM (bench/speed.py --llm-shape).
# learning: a short bench/learning.py run (full preset, our game, seed 0, 1,280 env steps; 640 under `all`, whose
#   two phases share the device tool's 10-minute command limit). LightZero's UniZero needs
#   its compiled tree, built for CPython 3.11 only, so on this machine it is reported as not run.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE="${1:-all}"
GAMES_DIR=.cache/gpu_games

if [ "$PHASE" = "--prepare-games" ]; then
  src="${PRIORZERO_JERICHO_GAMES:-../shared/jericho-games}"
  mkdir -p "$GAMES_DIR" && cp "$src/detective.z5" "$src/zork1.z5" "$GAMES_DIR/" && ls -la "$GAMES_DIR"
  exit $?
fi
case "$PHASE" in all|speed|learning) ;; *) echo "usage: $0 [all|speed|learning|--prepare-games]" >&2; exit 2;; esac
for dir in .cache/gpu_jericho .cache/gpu_site .cache/gpu_whl312; do
  [ -d "$dir" ] || { echo "missing $dir: run scripts/prepare_gpu_bundle.sh on the CPU machine and bring .cache along" >&2; exit 1; }
done

OUT="${OUT:-$PWD/gpu_bench_out}"
mkdir -p "$OUT"
SITE=/tmp/priorzero_gpu_site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .cache/gpu_whl312/*.whl || exit 1
export PYTHONPATH="$PWD/.cache/gpu_jericho:$PWD/.cache/gpu_site:$SITE:$PWD"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PRIORZERO_LOG_LEVEL=WARNING
[ -d "$GAMES_DIR" ] && export PRIORZERO_JERICHO_GAMES="$PWD/$GAMES_DIR"
# Seconds per phase: both phases must fit the device tool's 10-minute command limit together.
if [ "$PHASE" = all ]; then SPEED_S=290 LEARN_S=230 LEARN_STEPS=640 CHILD_S=110
else SPEED_S=560 LEARN_S=560 LEARN_STEPS=1280 CHILD_S=250; fi
SPEED_GAME=detective.z5
[ -f "${PRIORZERO_JERICHO_GAMES:-/nonexistent}/$SPEED_GAME" ] || SPEED_GAME=default

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  nproc
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$PHASE" = all ] || [ "$PHASE" = speed ]; then
  ANCHOR='{"env": {"collector_env_num": 16, "max_seq_len": 512},
           "policy": {"mcts": {"num_simulations": 50}, "learn": {"batch_size": 64},
                      "model": {"embed_dim": 768, "num_layers": 2, "num_heads": 24,
                                "encoder": {"hidden_dim": 384, "num_layers": 6, "num_heads": 12}},
                      "collect": {"collector": {"n_steps": 64}}},
           "train": {"wm_updates_per_iter": 16}}'
  echo "[gpu_bench] speed on $SPEED_GAME (log: $OUT/speed.log)"
  timeout $SPEED_S python3 bench/speed.py --full --device cuda --game "$SPEED_GAME" --iterations 4 \
      --llm-shape qwen2.5-0.5b --config-override "$ANCHOR" > "$OUT/speed.log" 2>&1
  echo "[gpu_bench] speed exit $?"
  sed -n '/^Command:/,$p' "$OUT/speed.log" > "$OUT/speed.md"
  cat "$OUT/speed.md"
fi

if [ "$PHASE" = all ] || [ "$PHASE" = learning ]; then
  echo "[gpu_bench] learning (log: $OUT/learning.log)"
  timeout $LEARN_S python3 bench/learning.py --device cuda --full --games default --seeds 0 --env-steps $LEARN_STEPS \
      --eval-every 320 --threads 0 --timeout $CHILD_S --out /tmp/priorzero_gpu_learning > "$OUT/learning.log" 2>&1
  echo "[gpu_bench] learning exit $?"
  for f in learning.csv learning.png; do cp "/tmp/priorzero_gpu_learning/$f" "$OUT/" 2>/dev/null; done
  cp /tmp/priorzero_gpu_learning/summary.md "$OUT/learning.md" 2>/dev/null && cat "$OUT/learning.md"
fi
