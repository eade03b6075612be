"""World-model learner speed: where one update's time goes.

Run from the repository root::

    python bench/wm_train_speed.py --quick                            # debug sizes, CPU
    python bench/wm_train_speed.py --full --device cuda --config-override '{"policy": {...}}' --profile

The world model, its learner and the replay buffer come from ``get_priorzero_config`` (the main job's sizes and
settings). The buffer is filled with synthetic steps (observations of random tokens and random lengths up to
``env.max_seq_len``, random legal actions, visit distributions and rewards): only shapes matter for speed. Over N
updates after a warm-up it times, with a CUDA synchronize after each part so the times are the device's too:

* sampling a batch with n-step targets only (CPU),
* sampling with the target model's bootstrap values (``target_value_fn``, what the loop does by default),
* ``train_step`` on a batch sampled beforehand,
* the whole update as the loop runs it (sample with bootstrap values, then ``train_step``),

and how many of a sampled batch's observations are distinct (the text encoder's packed path encodes each once).

``--profile`` adds torch.profiler's top operators of a few whole updates by self device time (CPU time on CPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from common import device_line  # bench/common.py (the script's folder is on sys.path)


def build(args: argparse.Namespace):
    """(config, learner, buffer) at the main job's sizes with the overrides applied."""
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer
    from lzero_ext.policy.wm_learner import WorldModelLearner
    from lzero_ext.policy.world_model import build_world_model
    from lzero_ext.utils.config import deep_merge

    overrides: dict = {}
    for text in args.config_override or []:
        overrides = deep_merge(overrides, json.loads(text))
    cfg, _ = get_priorzero_config(device=args.device, debug=not args.full, overrides=overrides, llm_path=None)
    model_cfg = dict(cfg.policy.model, device=args.device)
    for key in ("type", "import_names"):
        model_cfg.pop(key, None)
    learner = WorldModelLearner(build_world_model(model_cfg), cfg.policy.learn.wm)
    buffer = PriorZeroGameBuffer(cfg.policy.other.replay_buffer)
    fill(buffer, cfg, args.buffer_steps, np.random.default_rng(args.seed))
    return cfg, learner, buffer


def fill(buffer, cfg, steps: int, rng: np.random.Generator) -> None:
    """``steps`` synthetic transitions in episodes of ``env.max_steps``, cut into segments as the collector does."""
    from lzero_ext.buffer.game_segment import SegmentBuilder, StepDecision, StepObservation

    actions, length = int(cfg.env.action_space_size), int(cfg.env.max_seq_len)
    vocab = int(cfg.policy.model.vocab_size)
    collector = cfg.policy.collect.collector
    builder = SegmentBuilder(actions, collector.segment_length, collector.pad_length, collector.history_length)

    def observation(t: int) -> StepObservation:
        tokens = np.zeros(length, np.int64)
        n = int(rng.integers(length // 4, length + 1))
        tokens[:n] = rng.integers(1, vocab, n)
        legal = rng.permutation(actions)[: int(rng.integers(5, min(actions, 30) + 1))]
        mask = np.zeros(actions, np.int8)
        mask[legal] = 1
        return StepObservation(tokens, (tokens != 0).astype(np.int64), mask, "synthetic observation",
                               [f"action {a}" for a in legal], t, action_indices=legal)

    segments, current = [], observation(0)
    segments += builder.reset(current)
    episode = int(cfg.env.max_steps)
    for t in range(steps):
        legal = current.action_indices
        visits = np.zeros(actions, np.float32)
        visits[legal] = rng.random(len(legal)).astype(np.float32)
        action = int(legal[int(np.argmax(visits[legal]))])
        decision = StepDecision(action, f"action {action}", visits / visits.sum(), float(rng.normal()))
        current = observation((t + 1) % episode)
        segments += builder.append(decision, float(rng.random() < 0.05), current, (t + 1) % episode == 0)
        if (t + 1) % episode == 0:
            current = observation(0)
            segments += builder.reset(current)
    segments += builder.flush()
    buffer.push_game_segments(segments)


def timed(fn: Callable[[], object], sync: Callable[[], None], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls, synchronising the device around each."""
    seconds = []
    for _ in range(repeats):
        sync()
        tic = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - tic)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--debug", dest="full", action="store_false", help="debug size preset (default)")
    size.add_argument("--full", dest="full", action="store_true", help="full size preset")
    parser.set_defaults(full=False)
    parser.add_argument("--config-override", action="append", default=None,
                        help="JSON dict merged (strictly) into main_config; repeatable, later ones win")
    parser.add_argument("--updates", type=int, default=16, help="measured calls of each part (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="whole updates before measuring")
    parser.add_argument("--buffer-steps", type=int, default=2000, help="synthetic transitions in the buffer")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    parser.add_argument("--quick", action="store_true", help="4 measured calls, 500 buffer steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.buffer_steps = 4, 500
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch reports no CUDA device on this machine")
    torch.manual_seed(args.seed)
    cfg, learner, buffer = build(args)
    batch_size = int(cfg.policy.learn.batch_size)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def update() -> None:
        learner.train_step(buffer.sample_world_model_batch(batch_size, learner.target_value_fn))

    timed(update, sync, args.warmup)
    batch = buffer.sample_world_model_batch(batch_size, learner.target_value_fn)
    parts = {
        "sample, n-step targets only (CPU)": timed(lambda: buffer.sample_world_model_batch(batch_size), sync,
                                                   args.updates),
        "sample with target-model bootstrap values": timed(
            lambda: buffer.sample_world_model_batch(batch_size, learner.target_value_fn), sync, args.updates),
        "train_step on a sampled batch": timed(lambda: learner.train_step(batch), sync, args.updates),
        "whole update (sample with values + train_step)": timed(update, sync, args.updates),
    }
    model = cfg.policy.model
    rows = batch.observations.reshape(-1, batch.observations.shape[-1])
    distinct = len(np.unique(rows, axis=0))
    print(f"Command: `python {' '.join(sys.argv)}`  ")
    print(f"Device: {device_line(args.device)}  ")
    print(f"Sizes: batch {batch_size}, {model.num_unroll_steps} unroll steps, observations of {cfg.env.max_seq_len} "
          f"tokens, encoder {model.encoder.hidden_dim} wide × {model.encoder.num_layers} layers, world model "
          f"embed {model.embed_dim} × {model.num_layers} layers; precision {cfg.policy.learn.wm.mixed_precision}; "
          f"{args.updates} calls each after {args.warmup} warm-up updates, medians  ")
    print(f"Distinct observations in a sampled batch: {distinct} of {len(rows)} (overlapping windows of a "
          f"{args.buffer_steps}-step buffer; the encoder's packed path encodes each once)  \n")
    print("| part | ms (median) | ms (min) | per second |")
    print("|---|---:|---:|---:|")
    for label, seconds in parts.items():
        median = statistics.median(seconds)
        print(f"| {label} | {median * 1e3:.1f} | {min(seconds) * 1e3:.1f} | {1 / median:.2f} |")
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profile:
            for _ in range(4):
                update()
            sync()
        sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print("\nTop operators over 4 whole updates:\n")
        print(profile.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
