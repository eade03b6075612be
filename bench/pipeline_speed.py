"""Pipeline speed: overall env steps/s (collection and learning together) of the collection backends.

Run from the repository root::

    python bench/pipeline_speed.py            # debug preset, default game, 12 measured iterations, 2 rounds
    python bench/pipeline_speed.py --quick    # 4 measured iterations, 1 round

Same config for every backend (``collect.backend`` sync / async with the acting worker in a child process or in a
thread / ray with 2 collectors): ``HybridTrainer`` from
``get_priorzero_debug_config``, evaluation, checkpoints and LLM export off. Each run is its own subprocess: one
warm-up iteration (model load, first buffer fill, threads or actors started; not counted), then N iterations of the
loop body; overall env steps/s = env steps the loop received in those N iterations / their wall time, so learning
time counts. Rounds interleave the backends (sync, async, ray, sync, ...) so that a busy machine hurts all of them
alike; the table shows the median over rounds. The ray row says "not installed" when ``ray`` cannot be imported.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import cpu_name  # bench/common.py (the script's folder is on sys.path)

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("sync", "async", "async_thread", "ray")
LABELS = dict(sync="sync", async_thread="async (thread)", ray="ray (2 collectors)")
LABELS["async"] = "async (process)"


def build_config(args: argparse.Namespace, backend: str, exp_dir: Path):
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

    collect: dict = dict(backend="async", async_worker="thread") if backend == "async_thread" else dict(backend=backend)
    if backend == "ray":
        collect["num_collectors"] = 2
    if args.torch_threads is not None and backend.startswith("async"):
        collect["torch_threads"] = args.torch_threads
    overrides = dict(train=dict(eval_freq=0, save_freq=0, export_llm=False, max_iter=args.iterations + 1),
                     collect=collect)
    return get_priorzero_debug_config(env_id=args.game, seed=args.seed, exp_name=str(exp_dir), overrides=overrides)


def run_backend(args: argparse.Namespace, backend: str) -> dict:
    """One measured run in this process; what the parent needs, as a JSON-able dict."""
    import torch

    from lzero_ext.entry.hybrid_loop import HybridTrainer

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix=f"priorzero_pipeline_{backend}_") as tmp:
        cfg, create_cfg = build_config(args, backend, Path(tmp) / "exp")
        trainer = HybridTrainer(cfg, create_cfg)
        try:
            trainer._iteration()  # noqa: SLF001 - warm-up
            rows, start, steps_before = [], time.perf_counter(), trainer.collector.envstep
            for _ in range(args.iterations):
                rows.append(trainer._iteration())  # noqa: SLF001 - the loop body of HybridTrainer.run
            wall = time.perf_counter() - start
            env_steps = trainer.collector.envstep - steps_before
        finally:
            trainer.close()

    def mean(key: str) -> float | None:
        values = [row[key] for row in rows if key in row]
        return statistics.mean(values) if values else None

    return dict(rate=env_steps / wall, wall=wall, env_steps=env_steps, collect_s=mean("perf/collect_seconds"),
                staleness_mean=mean("async/staleness"),
                staleness_max=max((row["async/staleness"] for row in rows if "async/staleness" in row), default=None),
                blocked_s=mean("async/collector_blocked_seconds"))


def run_subprocess(args: argparse.Namespace, backend: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), *args.forwarded, "--_backend", backend, "--_out", str(out)]
    try:
        subprocess.run(command, check=True, cwd=REPO_ROOT)
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def ray_available() -> bool:
    from lzero_ext.import_utils import is_available

    return is_available("ray")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_report(args: argparse.Namespace, results: dict[str, list[dict]], load_before: float) -> None:
    import torch

    print(f"Command: `{args.command.strip()}`  ")
    print(f"Machine: CPU {cpu_name()}, {os.cpu_count()} cores, load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at the end; torch {torch.__version__}, "
          f"{args.torch_threads or torch.get_num_threads()} intra-op thread(s) per process  ")
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ")
    print(f"Config: debug preset, game {args.game}, {args.iterations} measured iterations after 1 warm-up, "
          f"median of {args.rounds} round(s)\n")
    print("| backend | env steps/s (overall) | vs sync | wall s | loop's collect wait s/iter | staleness mean / max |")
    print("|---|---:|---:|---:|---:|---:|")
    sync_rate = statistics.median(r["rate"] for r in results["sync"]) if results.get("sync") else None
    for backend in args.backends:
        runs = results.get(backend)
        label = LABELS[backend]
        if runs is None:  # only ray is ever skipped
            print(f"| {label} | not installed | | | | |")
            continue
        rate = statistics.median(r["rate"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        collect = statistics.median(r["collect_s"] for r in runs if r["collect_s"] is not None)
        stale = [r for r in runs if r["staleness_mean"] is not None]
        staleness = (f"{statistics.mean(r['staleness_mean'] for r in stale):.2f} / "
                     f"{max(r['staleness_max'] for r in stale):.0f}") if stale else "0 / 0"
        ratio = f"{rate / sync_rate:.2f}×" if sync_rate else "n/a"
        print(f"| {label} | {rate:.2f} | {ratio} | {wall:.1f} | {collect:.2f} | {staleness} |")
    per_round = ", ".join(f"{b}: " + " / ".join(f"{r['rate']:.2f}" for r in runs) for b, runs in results.items())
    print(f"\nPer round (env steps/s): {per_round}.  ")
    print("Staleness: learner weight publishes between the acting weights a chunk was collected with and the "
          "learner's when the loop used it (sync acts with the learner's own weights: 0; the ray backend syncs "
          "before each collect).")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Overall env steps/s of the sync, async and ray collection backends")
    parser.add_argument("--game", default="default", help="'default' (our game) or a story-file path")
    parser.add_argument("--iterations", type=int, default=12, help="measured iterations per run (after 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the backends (median)")
    parser.add_argument("--quick", action="store_true", help="4 measured iterations, 1 round")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of sync,async,ray")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_backend", choices=BACKENDS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds = 4, 1
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be >= 1")
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    if args._backend is not None:  # child process: one run, result as JSON
        Path(args._out).write_text(json.dumps(run_backend(args, args._backend)))
        return
    args.forwarded = [a for a in argv]
    args.command = "python bench/pipeline_speed.py " + " ".join(argv)
    load_before = os.getloadavg()[0]
    has_ray = ray_available()
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for backend in args.backends:
            if backend == "ray" and not has_ray:
                continue
            results.setdefault(backend, []).append(run_subprocess(args, backend))
    print_report(args, results, load_before)


if __name__ == "__main__":
    main()
