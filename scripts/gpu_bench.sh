#!/usr/bin/env bash
# One command for the benchmarks on the GPU machine (Python 3.12, torch/transformers/peft present, no internet, no
# lightzero/DI-engine/jericho). Results go to $OUT (default ./gpu_bench_out): speed.md, learning.csv, learning.png,
# learning.md, env.txt and a log of each phase.
#
# Here, once (CPython 3.11 venv made by `make setup`):
#   bash scripts/prepare_gpu_bundle.sh          # .cache/gpu_jericho, .cache/gpu_site, .cache/gpu_whl312
#   bash scripts/gpu_bench.sh --prepare-games [GAME ...]  # copies these story files (default detective.z5
#       zork1.z5) from $PRIORZERO_JERICHO_GAMES into .cache/gpu_games (ignored)
# There, from the repository root, with those four .cache folders next to the tree:
#   bash scripts/gpu_bench.sh [all|speed|learning]     # all (default) is cut to fit 10 minutes; one phase: 9.5
#   bash scripts/gpu_bench.sh learning ARGS...          # bench/learning.py with these arguments instead (e.g.
#       --games default detective.z5 --seeds 0 1 2 --jobs 16: the CPU-bound debug preset, a run per core);
#       --deadline (the phase's limit less 40 s) is added unless given, so runs still going are ended and reported
#       with the evaluations they reached. The knowing-prior experiment (LLM presets prepared once before the runs;
#       UniZero is skipped here, Python 3.12, with the reason in the summary), world models on the CPU and only the
#       LLM on the GPU (measured 1.6-3.6x less wall time per run than all on the GPU, docs/gpu.md), a run per core:
#         bash scripts/gpu_bench.sh learning --device cpu --llm-device cuda --llm-path smollm2-135m-jericho \
#             --base-llm-path smollm2-135m --max-steps 100 --games detective.z5 zork1.z5 --seeds 0 1 2 \
#             --env-steps 5120 --eval-every 1024 --eval-episodes 4 --collector-envs 8 --jobs 16 --resume
#       (8 collecting envs make each prior call score 8 states: 44-52 prior states/s per run against 19-22 with the
#       preset's 2, run 4 of docs/results/learning_knowing_prior.md)
#       With --resume a budget longer than one call runs over consecutive calls of a warm machine: the same command
#       again continues every unfinished run from its newest checkpoint in LEARN_DIR (/tmp, kept while it is warm).
#   bash scripts/gpu_bench.sh compare [NAME[:SECONDS[:ITERS]] ...]  # the speed anchor, LLM variant only, once per
#       named setting (default: new async baseline), each run killed (process group) after SECONDS (default 180):
#       speed_NAME.log each (its table at the end), compare.md with the main rates. Names:
#         new       the defaults (world-model training in bf16 autocast + TF32 + fused AdamW, length-bucketed encoder)
#         baseline  the learner as before issue 7: fp32, no TF32, unfused AdamW, one encoder chunk, cuDNN attention
#         async     new + collect.backend=async (acting worker process, collection overlaps training)
#         thread    new + async with async_worker=thread (acting copy in a thread of the learner process)
#         subproc   new + env.manager.type=subprocess (each env steps in its own process)
#         thread_subproc  thread + subproc
#         process_subproc async + subproc (the acting worker process starts the 16 env processes: collection off the
#                   learner's GIL and envs stepped in parallel)
#         process_subproc_env32  process_subproc with 32 collector envs (search and prior batches of 32), 128 env
#                   steps, 32 world-model and 2 LLM updates per iteration (the same replay ratios)
#         thread_subproc_env32   thread_subproc with the same 32 envs
#       ITERS, else SPEED_ITERS (default 5: one LLM update, train.llm_train_freq), sets the measured iterations;
#       SPEED_WARMUP (default 1) the iterations run before them.
#       NAME+PART adds a part to a setting: +cudnn lets PyTorch pick the text encoder's attention kernels (cuDNN);
#       +padded runs the text encoder on padded length buckets instead of packed tokens (flash varlen attention).
#   bash scripts/gpu_bench.sh wm [ARGS...]   # bench/wm_train_speed.py at the anchor sizes (ARGS: its own, e.g.
#       --profile or another --config-override): where a world-model update's time goes
#
# speed: bench/speed.py on detective at LightZero's Jericho UniZero anchor sizes (LightZero's zoo/jericho UniZero config):
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
  shift
  games=("$@")
  [ ${#games[@]} -gt 0 ] || games=(detective.z5 zork1.z5)
  mkdir -p "$GAMES_DIR" && for game in "${games[@]}"; do cp "$src/$game" "$GAMES_DIR/" || exit 1; done
  ls -la "$GAMES_DIR"
  exit $?
fi
case "$PHASE" in all|speed|learning|compare|wm) ;;
  *) echo "usage: $0 [all|speed|learning|compare [NAME[:S]...]|wm|--prepare-games]" >&2; exit 2;; esac
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
LEARN_DIR="${LEARN_DIR:-/tmp/priorzero_gpu_learning}"  # bench/learning.py's --out (exp dirs, CSV) there
[ -f "${PRIORZERO_JERICHO_GAMES:-/nonexistent}/$SPEED_GAME" ] || SPEED_GAME=default

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  nproc
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

ANCHOR='{"env": {"collector_env_num": 16, "max_seq_len": 512},
         "policy": {"mcts": {"num_simulations": 50}, "learn": {"batch_size": 64},
                    "model": {"embed_dim": 768, "num_layers": 2, "num_heads": 24,
                              "encoder": {"hidden_dim": 384, "num_layers": 6, "num_heads": 12}},
                    "collect": {"collector": {"n_steps": 64}}},
         "train": {"wm_updates_per_iter": 16}}'
# Measured iterations: 5 = one LLM update (train.llm_train_freq 5), so both learners count in the overall rate.
SPEED_ITERS="${SPEED_ITERS:-5}"
# Iterations run before measuring (the first pays the model load and compiles; more give a steady-state figure).
SPEED_WARMUP="${SPEED_WARMUP:-1}"

if [ "$PHASE" = all ] || [ "$PHASE" = speed ]; then
  echo "[gpu_bench] speed on $SPEED_GAME (log: $OUT/speed.log)"
  timeout $SPEED_S python3 bench/speed.py --full --device cuda --game "$SPEED_GAME" --iterations "$SPEED_ITERS" \
      --warmup "$SPEED_WARMUP" --llm-shape qwen2.5-0.5b --config-override "$ANCHOR" > "$OUT/speed.log" 2>&1
  echo "[gpu_bench] speed exit $?"
  sed -n '/^Command:/,$p' "$OUT/speed.log" > "$OUT/speed.md"
  cat "$OUT/speed.md"
fi

# Run "$@" in its own process group; after $1 seconds end the whole group (acting worker, env processes too, so
# nothing of a cut-off run keeps using the GPU while the next one is measured).
run_limited() {
  local limit=$1 waited=0 pid; shift
  setsid "$@" & pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge "$limit" ]; then
      echo "[gpu_bench] time limit ${limit}s: ending process group $pid"
      kill -TERM -- "-$pid" 2>/dev/null; sleep 5; kill -KILL -- "-$pid" 2>/dev/null; break
    fi
    sleep 1; waited=$((waited + 1))
  done
  wait "$pid"
}

# A compare setting is a list of parts, each one JSON override of the anchor config (later parts win);
# NAME+PART+... adds parts to a named setting (e.g. thread_subproc_env32+cudnn).
setting_parts() {
  local name="${1%%+*}" extra=""
  [ "$name" != "$1" ] && extra="${1#*+}"
  case "$name" in
    new) echo -n "";; baseline) echo -n old_learner;; async) echo -n process;; thread) echo -n thread;;
    subproc) echo -n subproc;; thread_subproc) echo -n thread subproc;; process_subproc) echo -n process subproc;;
    process_subproc_env32) echo -n process subproc env32;; thread_subproc_env32) echo -n thread subproc env32;;
    *) return 1;;
  esac
  for part in ${extra//+/ }; do part_json "$part" > /dev/null || return 1; echo -n " $part"; done
}
part_json() {
  case "$1" in
    old_learner) echo '{"policy": {"learn": {"wm": {"mixed_precision": "none", "tf32": false, "fused_adamw": false}},
                                   "model": {"encoder": {"length_buckets": 1, "attention_kernels": "auto"}}}}';;
    process) echo '{"collect": {"backend": "async", "async_worker": "process"}}';;
    thread) echo '{"collect": {"backend": "async", "async_worker": "thread"}}';;
    subproc) echo '{"env": {"manager": {"type": "subprocess", "context": "spawn"}}}';;
    # Twice the envs and env steps per iteration, so twice the updates of both learners: the same replay ratios.
    env32) echo '{"env": {"collector_env_num": 32}, "policy": {"collect": {"collector": {"n_steps": 128}}},
                  "train": {"wm_updates_per_iter": 32, "llm_updates_per_iter": 2}}';;
    cudnn) echo '{"policy": {"model": {"encoder": {"attention_kernels": "auto"}}}}';;  # PyTorch picks (cuDNN)
    padded) echo '{"policy": {"model": {"encoder": {"packed_attention": "off"}}}}';;  # the encoder before packing
    *) return 1;;
  esac
}

if [ "$PHASE" = compare ]; then
  shift
  [ $# -gt 0 ] || set -- new async baseline
  echo "| setting | overall env steps/s | collect env steps/s | WM train steps/s | s/iter collect / WM / LLM | peak GPU MiB |" > "$OUT/compare.md"
  echo "|---|---:|---:|---:|---|---:|" >> "$OUT/compare.md"
  for spec in "$@"; do
    IFS=: read -r name limit iters <<< "$spec"; limit="${limit:-180}"; iters="${iters:-$SPEED_ITERS}"
    parts=$(setting_parts "$name") || { echo "[gpu_bench] unknown setting $name" >&2; continue; }
    overrides=(--config-override "$ANCHOR")
    for part in $parts; do overrides+=(--config-override "$(part_json "$part")"); done
    log_name="${name//+/__}"  # the device tool brings back only plain file names
    echo "[gpu_bench] compare $name (limit ${limit}s, warm-up $SPEED_WARMUP, log: $OUT/speed_$log_name.log)"
    tic=$SECONDS
    run_limited "$limit" python3 bench/speed.py --full --device cuda --game "$SPEED_GAME" --iterations "$iters" \
        --warmup "$SPEED_WARMUP" --variants llm --llm-shape qwen2.5-0.5b "${overrides[@]}" \
        > "$OUT/speed_$log_name.log" 2>&1
    echo "[gpu_bench] compare $name exit $? after $((SECONDS - tic)) s"
    grep '^\[speed ' "$OUT/speed_$log_name.log" | tail -n "$iters"
    sed -n '/^Command:/,$p' "$OUT/speed_$log_name.log"
    python3 - "$name" "$OUT/speed_$log_name.log" >> "$OUT/compare.md" <<'PY'
import sys
name, path = sys.argv[1], sys.argv[2]
rows = {}
for line in open(path, errors="replace"):
    if not line.startswith("| "):
        continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) >= 2:
        rows[cells[0]] = cells[1]
get = lambda key: rows.get(key, "n/a")
seconds = " / ".join(get(k) for k in ("… collecting (async: waiting for data)", "… world-model training", "… LLM training"))
print(f"| {name} | {get('overall env steps/s (collect + train)')} | {get('collection env steps/s')} | "
      f"{get('world-model train steps/s')} | {seconds} | {get('peak GPU memory MiB')} |")
PY
  done
  cat "$OUT/compare.md"
fi

if [ "$PHASE" = wm ]; then
  echo "[gpu_bench] world-model learner breakdown (log: $OUT/wm_train_speed.log)"
  shift
  timeout 560 python3 bench/wm_train_speed.py --full --device cuda --config-override "$ANCHOR" "$@" \
      >> "$OUT/wm_train_speed.log" 2>&1
  echo "[gpu_bench] wm exit $?"
  sed -n '/^Command:/,$p' "$OUT/wm_train_speed.log"
fi

if [ "$PHASE" = all ] || [ "$PHASE" = learning ]; then
  echo "[gpu_bench] learning (log: $OUT/learning.log)"
  [ "$PHASE" = learning ] && shift
  if [ $# -gt 0 ]; then learn_args=("$@")  # `learning ARGS...`: bench/learning.py's own arguments
  else learn_args=(--device cuda --full --games default --seeds 0 --env-steps "$LEARN_STEPS" --eval-every 320 \
                   --threads 0 --timeout "$CHILD_S"); fi
  # end the runs in time to write the CSV, plot and summary before the phase's own limit
  [[ " ${learn_args[*]} " == *" --deadline "* ]] || learn_args+=(--deadline $((LEARN_S - 40)))
  timeout $LEARN_S python3 bench/learning.py "${learn_args[@]}" --out "$LEARN_DIR" \
      > "$OUT/learning.log" 2>&1
  echo "[gpu_bench] learning exit $?"
  for f in learning.csv learning.png; do cp "$LEARN_DIR/$f" "$OUT/" 2>/dev/null; done
  cp "$LEARN_DIR/summary.md" "$OUT/learning.md" 2>/dev/null && cat "$OUT/learning.md"
fi
