"""MCTS speed: simulations per second of our batched search, against LightZero's C++ tree and with a UniZero model.

(a) ``--world-model none`` (default): a model that returns precomputed outputs, so the time is the tree's own
    bookkeeping; ours (lzero_ext.mcts.BatchedMCTS) against LightZero's compiled tree (bench/ctree_backend.py)
    where it imports (CPython 3.11). Target: at B=32 ours costs at most 2x the C++ tree per simulation.
(b) ``--world-model unizero``: LightZero's UniZero world model (vector observations, LightZero's Jericho sizes:
    embed 768, 2 layers) driven through lzero_ext.mcts.unizero_adapter, over consecutive collect steps (initial
    inference with the previous observation and action, then the search), with LightZero's latent-hash KV caches
    (UniZeroSearchModel) and with ours per tree node (UniZeroNodeKVSearchModel). Targets on one H100:
    >= 2,500 simulations/s at B=16 with 50 simulations, tree bookkeeping < 20% of search time.

Measured 2026-11-25 (50 simulations, 20 actions; medians):

* this repo's 2-core CPU box, tree only, B=32: ours 13.6 ms / search, LightZero C++ 8.0 ms (1.70x); B=128: 0.64x;
  B=1: 8.9x (our per-simulation numpy overhead dominates tiny batches).
* one H100 (Python 3.12), UniZero e768 L2, B=16, 20 collect steps: per-node KV 3,426 sims/s (random heads) and
  2,880 (LightZero's zero-init heads), tree 12% / 9% of search time; LightZero's hashing KV protocol 1,104 / 1,420.

Examples::

    python bench/mcts_speed.py --quick
    python bench/mcts_speed.py --world-model unizero --device cuda --batch-sizes 16
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from lzero_ext.import_utils import is_available
from lzero_ext.mcts.search import BatchedMCTS, SearchConfig
from toy_models import TableModel  # bench/toy_models.py (the script's folder is on sys.path)


@dataclass
class Row:
    """One measured configuration."""

    label: str
    batch: int
    ms_per_search: float
    sims_per_s: float
    tree_fraction: float
    note: str = ""


def time_tree_only(search, batch: int, num_actions: int, sims: int, repeats: int) -> tuple[float, float]:
    """Median milliseconds per search and the tree's share of it, with the table model."""
    model = TableModel(batch, num_actions, sims)
    root = model.root(np.ones((batch, num_actions), dtype=bool))
    rng = np.random.default_rng(0)
    search.search(model, root, add_noise=True, rng=rng)  # warm-up
    times, fractions = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = search.search(model, root, add_noise=True, rng=rng)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        fractions.append(out.tree_seconds / elapsed)
    return 1000 * statistics.median(times), statistics.median(fractions)


def bench_tree(args) -> list[Row]:
    cfg = SearchConfig(num_simulations=args.num_simulations)
    backends = [("ours (numpy)", BatchedMCTS(cfg))]
    if is_available("lzero.mcts.ctree.ctree_muzero.mz_tree"):
        from ctree_backend import CtreeMCTS  # bench/ctree_backend.py

        backends.append(("LightZero C++ tree", CtreeMCTS(cfg)))
    rows = []
    for batch in args.batch_sizes:
        measured = {}
        # Interleave backends over rounds so load changes on a shared machine hit both alike.
        for _ in range(args.rounds):
            for label, search in backends:
                ms, frac = time_tree_only(search, batch, args.num_actions, args.num_simulations, args.repeats)
                measured.setdefault(label, []).append((ms, frac))
        for label, _ in backends:
            ms = statistics.median(m for m, _ in measured[label])
            frac = statistics.median(f for _, f in measured[label])
            rows.append(Row(label, batch, ms, batch * args.num_simulations / (ms / 1000), frac))
        if len(backends) == 2:
            ours, theirs = rows[-2], rows[-1]
            ours.note = f"{ours.ms_per_search / theirs.ms_per_search:.2f}x the C++ tree's time"
    return rows


def bench_unizero(args) -> list[Row]:
    from lzero_ext.mcts.unizero_adapter import (
        UniZeroNodeKVSearchModel,
        UniZeroSearchModel,
        build_unizero_model,
        unizero_world_model_config,
    )

    adapters = {"hash": UniZeroSearchModel, "node": UniZeroNodeKVSearchModel}
    rows = []
    device = torch.device(args.device)
    for batch, kv_mode in [(b, mode) for b in args.batch_sizes for mode in args.kv_cache]:
        wm_cfg = unizero_world_model_config(
            args.num_actions, env_num=batch, num_simulations=args.num_simulations, embed_dim=args.embed_dim,
            num_layers=args.num_layers, num_heads=args.num_heads, device=args.device,
        )
        model = build_unizero_model(args.obs_dim, wm_cfg, seed=0, randomize_heads=args.head_init == "random").to(device)
        adapter = adapters[kv_mode](model)
        search = BatchedMCTS(SearchConfig(num_simulations=args.num_simulations))
        rng = np.random.default_rng(0)
        legal = np.ones((batch, args.num_actions), dtype=bool)
        last_actions = None
        search_times, tree_times, step_times = [], [], []
        total_steps = args.warmup_steps + args.steps
        for step in range(total_steps):
            if step % args.episode_length == 0:
                adapter.clear_caches()
                last_actions = None
            obs = torch.randn(batch, args.obs_dim, device=device)
            sync(device)
            start = time.perf_counter()
            roots = adapter.initial_inference(obs, last_actions, np.full(batch, step % args.episode_length))
            search_start = time.perf_counter()
            out = search.search(adapter, roots.to_root_input(roots.policy_logits, legal), add_noise=True, rng=rng)
            sync(device)
            end = time.perf_counter()
            last_actions = out.visit_counts.argmax(axis=1)
            if step >= args.warmup_steps:
                search_times.append(end - search_start)
                tree_times.append(out.tree_seconds)
                step_times.append(end - start)
        search_s = sum(search_times)
        sims = batch * args.num_simulations * len(search_times)
        rows.append(Row(
            f"UniZero e{args.embed_dim} L{args.num_layers}, {args.head_init} heads, {kv_mode} KV ({args.device})", batch,
            1000 * search_s / len(search_times), sims / search_s, sum(tree_times) / search_s,
            f"{sims / sum(step_times):.0f} sims/s incl. initial inference",
        ))
        del model, adapter
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def print_table(args, rows: list[Row]) -> None:
    device = args.device
    if args.device == "cuda" and torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    print(f"\n`python {' '.join(sys.argv)}`\n")
    print(
        f"device: {device}; CPU: {platform.processor() or platform.machine()} x{torch.get_num_threads()} torch threads; "
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}; "
        f"{args.num_simulations} simulations, {args.num_actions} actions\n"
    )
    print("| search | roots B | ms / search | simulations/s | tree share of search | note |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.label} | {row.batch} | {row.ms_per_search:.1f} | {row.sims_per_s:,.0f} | "
            f"{100 * row.tree_fraction:.0f}% | {row.note} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-model", choices=["none", "unizero"], default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--num-simulations", type=int, default=50)
    parser.add_argument("--num-actions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="searches per timing (tree-only)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per backend (tree-only)")
    parser.add_argument("--steps", type=int, default=20, help="timed collect steps (unizero)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--episode-length", type=int, default=50, help="steps between cache clears (unizero)")
    parser.add_argument("--kv-cache", nargs="+", choices=["hash", "node"], default=["hash", "node"],
                        help="UniZero KV caches: LightZero's latent-hash lookup, or ours per tree node")
    parser.add_argument("--head-init", choices=["random", "zero"], default="random",
                        help="'zero': LightZero's init (uniform priors, zero values, one shared next latent: wide "
                             "shallow trees); 'random': re-drawn head outputs (confident priors: deep narrow trees)")
    parser.add_argument("--embed-dim", type=int, default=768)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--obs-dim", type=int, default=768)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.batch_sizes is None:
        args.batch_sizes = [16] if args.world_model == "unizero" else [1, 8, 32, 128]
    if args.quick:
        args.repeats, args.rounds, args.steps, args.warmup_steps = 2, 1, 3, 1
        if args.world_model == "unizero" and args.device == "cpu":
            args.embed_dim, args.num_heads, args.obs_dim = 64, 4, 64
    rows = bench_tree(args) if args.world_model == "none" else bench_unizero(args)
    print_table(args, rows)


if __name__ == "__main__":
    main()
