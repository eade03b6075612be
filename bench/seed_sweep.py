"""Seed sweep: config variants of the main job x seeds, run in parallel, final metrics as mean ± sd per variant.

Single debug runs on our game differ by more than most config changes (a greedy policy that loops scores 0, the
same config with another seed 3), so a change counts only when it moves the mean over several seeds. Run from the
repository root, one single-threaded child per core (the numbers in the README came from a 16-core machine)::

    python bench/seed_sweep.py --seeds 8 --max-iter 90 --jobs 16 \\
        --variant 'list={"env": {"action_space_size": 12, "action_index_mode": "list"}}' --variant 'text_hash={}'

Each child is ``python -m zoo.jericho.priorzero.priorzero_orz_entry --debug --device cpu --seed S --max-iter N
--config-override JSON`` with its experiment under ``--out/<variant>_<seed>``; a child past ``--timeout`` seconds is
stopped and its last logged values count (the table shows the iterations reached). Metrics are the last values in
``log/metrics.jsonl``: the greedy evaluation, the evaluation sampled at T=0.5 (the debug preset's extra temperature)
and the mean return of the last 100 training episodes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO_ROOT, device_line, threads_env

from lzero_ext.utils.metrics import read_metrics

METRICS = {"greedy eval": "evals/reward_mean", "sampled eval (T=0.5)": "evals/t0.5/reward_mean",
           "last-100 training return": "collect/return_last100", "iterations": "counters/iteration"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                        help="a config variant: name and a JSON override dict ('{}' for the defaults); repeatable")
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 for every variant")
    parser.add_argument("--max-iter", type=int, default=90)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="children at a time")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--out", type=Path, default=Path("data_priorzero/seed_sweep"))
    return parser.parse_args(argv)


def parse_variant(spec: str) -> tuple[str, dict]:
    name, sep, override = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant must be NAME=JSON, got {spec!r}")
    try:
        return name, json.loads(override)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--variant {name}: the override is not JSON ({err})") from err


def run_child(name: str, override: dict, seed: int, args: argparse.Namespace) -> dict[str, float]:
    exp = args.out / f"{name}_{seed}"
    command = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--debug", "--device", "cpu",
               "--seed", str(seed), "--max-iter", str(args.max_iter), "--exp-name", str(exp),
               "--config-override", json.dumps(override)]
    env = threads_env(1)
    exp.mkdir(parents=True, exist_ok=True)
    with open(exp / "stdout.log", "w") as log:
        try:
            subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            print(f"[seed_sweep] {name} seed {seed}: stopped at the {args.timeout:.0f} s limit", flush=True)
    return last_metrics(exp / "log")


def last_metrics(log_dir: Path) -> dict[str, float]:
    """The last logged value of each reported metric in the run's ``metrics.jsonl`` (empty if none was logged)."""
    last: dict[str, float] = {}
    for record in read_metrics(log_dir):
        last.update({key: record[key] for key in METRICS.values() if key in record})
    return last


def mean_sd(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} (n={len(values)})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    variants = dict(parse_variant(spec) for spec in args.variant)
    jobs = [(name, override, seed) for name, override in variants.items() for seed in range(args.seeds)]
    start = time.time()
    print(f"[seed_sweep] {len(jobs)} runs, {args.jobs} at a time, on {device_line('cpu')}", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_child(*job, args), jobs))
    print(f"\nCommand: `python bench/seed_sweep.py {' '.join(sys.argv[1:])}` ({time.time() - start:.0f} s)\n")
    print("| variant | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name in variants:
        runs = [result for (job_name, _, _), result in zip(jobs, results) if job_name == name]
        cells = [mean_sd([run[key] for run in runs if key in run]) for key in METRICS.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n± is the standard deviation over seeds; n counts the runs that logged the metric.")


if __name__ == "__main__":
    main()
