"""Soak run: the main job for N minutes with its memory sampled, to show RSS does not grow without bound.

Run from the repository root::

    nice -n 19 python bench/soak.py --minutes 60 --exp-name /tmp/soak/run       # default (non-debug) config
    python bench/soak.py --minutes 3 --debug --exp-name /tmp/soak/try           # quick try

The real entry (``python -m zoo.jericho.priorzero.priorzero_orz_entry``) runs in a child process on the default game;
every ``--interval`` seconds this script samples the child's RSS and the RSS of the child plus its descendants (the
valid-action workers, env subprocesses) with psutil (or /proc when psutil is absent) and the last iteration logged
in ``<exp>/log/metrics.jsonl``. After ``--minutes`` it sends SIGINT (the job then writes a final checkpoint and
exits cleanly) and, if the child is still alive after ``--grace`` seconds, SIGKILL. It writes a CSV of the samples,
prints a markdown table plus the least-squares RSS slope in MiB/hour over the whole run and over its second half
(the first half includes warm-up: model building, the buffer filling, allocator pools growing), and exits non-zero
if the child crashed (died before the deadline or exited non-zero after SIGINT).

Growth of the replay buffer is by design until ``policy.other.replay_buffer.capacity_transitions``; the CSV carries
the buffer's transition count so buffer growth can be told from a leak.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024.0 * 1024.0


@dataclass
class Sample:
    """One memory sample of the child process."""

    elapsed_s: float
    rss_mib: float  # the entry process itself
    rss_tree_mib: float  # the entry process plus every descendant
    iteration: int  # last iteration logged in metrics.jsonl (-1 before the first)
    env_steps: int
    buffer_transitions: int


# ---------------------------------------------------------------- memory readers
def _proc_rss_bytes(pid: int) -> int:
    """RSS of one process from /proc (fallback when psutil is not installed)."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _proc_descendants(pid: int) -> list[int]:
    """Descendant pids from /proc/<pid>/task/*/children (fallback when psutil is not installed)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            stack.extend(children)
    return found


def read_rss(pid: int) -> tuple[float, float]:
    """(RSS of ``pid``, RSS of ``pid`` plus descendants), both in MiB."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        tree = own
        for child in proc.children(recursive=True):
            try:
                tree += child.memory_info().rss
            except psutil.Error:  # a child that exited between listing and reading
                pass
        return own / MIB, tree / MIB
    own = _proc_rss_bytes(pid)
    tree = own
    for child in _proc_descendants(pid):
        try:
            tree += _proc_rss_bytes(child)
        except OSError:
            pass
    return own / MIB, tree / MIB


def last_logged(metrics_path: Path) -> tuple[int, int, int]:
    """(iteration, env steps, buffer transitions) of the last line of metrics.jsonl that carries them."""
    if not metrics_path.exists():
        return -1, 0, 0
    # The file grows by a few lines per iteration; read only its tail.
    with open(metrics_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the first (cut) line of the tail, or a line being written
        if "counters/iteration" in record:
            return (int(record["counters/iteration"]), int(record.get("counters/env_steps", 0)),
                    int(record.get("buffer/transitions", 0)))
    return -1, 0, 0


# ---------------------------------------------------------------- statistics
def slope_per_hour(xs_s: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs (seconds), in units of ys per hour; None with fewer than 2 points."""
    n = len(xs_s)
    if n < 2:
        return None
    mx, my = sum(xs_s) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs_s)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs_s, ys))
    return sxy / sxx * 3600.0


def theil_sen_per_hour(xs_s: list[float], ys: list[float]) -> float | None:
    """Median of the pairwise slopes (per hour): one odd sample (the allocator returning memory for a minute)
    cannot tilt it the way it tilts least squares over a few dozen samples."""
    slopes = [(ys[j] - ys[i]) / (xs_s[j] - xs_s[i]) * 3600.0
              for i in range(len(xs_s)) for j in range(i + 1, len(xs_s)) if xs_s[j] > xs_s[i]]
    if not slopes:
        return None
    slopes.sort()
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


# ---------------------------------------------------------------- run
def build_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--exp-name", args.exp_name,
           "--seed", str(args.seed)]
    if args.debug:
        cmd.append("--debug")
    if args.max_iter is not None:
        cmd += ["--max-iter", str(args.max_iter)]
    if args.device is not None:
        cmd += ["--device", args.device]
    return cmd


def report_from_csv(args: argparse.Namespace) -> int:
    """Print the report of an earlier soak from its CSV (no run)."""
    with open(args.from_csv, newline="", encoding="utf-8") as f:
        samples = [Sample(float(r["elapsed_s"]), float(r["rss_mib"]), float(r["rss_tree_mib"]), int(r["iteration"]),
                          int(r["env_steps"]), int(r["buffer_transitions"])) for r in csv.DictReader(f)]
    last = samples[-1] if samples else Sample(0.0, 0.0, 0.0, -1, 0, 0)
    print_report(args, build_command(args), samples, last.elapsed_s, None, False, last.iteration, last.env_steps,
                 last.buffer_transitions, Path(args.from_csv))
    return 0


def run_soak(args: argparse.Namespace) -> int:
    exp = Path(args.exp_name)
    exp.mkdir(parents=True, exist_ok=True)
    csv_path = Path(args.csv) if args.csv else exp / "soak.csv"
    log_path = exp / "soak_child.log"
    cmd = build_command(args)
    print(f"soak: {' '.join(cmd)}  (log: {log_path})", flush=True)
    deadline_s = args.minutes * 60.0
    samples: list[Sample] = []
    with open(log_path, "w", encoding="utf-8") as log, open(csv_path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(list(Sample.__dataclass_fields__))
        start = time.monotonic()
        child = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        next_sample = 0.0
        died_early = False
        while True:
            elapsed = time.monotonic() - start
            if child.poll() is not None:
                died_early = elapsed < deadline_s
                break
            if elapsed >= next_sample:
                try:
                    own, tree = read_rss(child.pid)
                except (OSError, ProcessLookupError):
                    continue  # exited between poll and read; the next poll sees it
                except Exception as exc:  # psutil.NoSuchProcess and friends
                    if child.poll() is not None:
                        continue
                    raise exc
                it, steps, transitions = last_logged(exp / "log" / "metrics.jsonl")
                sample = Sample(round(elapsed, 1), round(own, 1), round(tree, 1), it, steps, transitions)
                samples.append(sample)
                writer.writerow([getattr(sample, k) for k in Sample.__dataclass_fields__])
                out.flush()
                print(f"soak: {elapsed / 60:5.1f} min  rss {own:8.1f} MiB  tree {tree:8.1f} MiB  iter {it}", flush=True)
                next_sample += args.interval
            if elapsed >= deadline_s:
                break
            time.sleep(min(1.0, max(0.05, next_sample - elapsed)))
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # final checkpoint, clean exit
            try:
                child.wait(timeout=args.grace)
            except subprocess.TimeoutExpired:
                print(f"soak: child still alive {args.grace:.0f} s after SIGINT; killing it", flush=True)
                child.kill()
                child.wait()
        wall = time.monotonic() - start
    rc = child.returncode
    it, steps, transitions = last_logged(exp / "log" / "metrics.jsonl")
    crashed = rc != 0  # died with an error, or had to be killed after SIGINT
    print_report(args, cmd, samples, wall, rc, died_early, it, steps, transitions, csv_path)
    if crashed:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("soak: the child crashed; last lines of its log:\n" + "\n".join(tail), flush=True)
        return 1
    return 0


def print_report(args: argparse.Namespace, cmd: list[str], samples: list[Sample], wall: float, rc: int | None,
                 died_early: bool, it: int, steps: int, transitions: int, csv_path: Path) -> None:
    xs = [s.elapsed_s for s in samples]
    half = [s for s in samples if s.elapsed_s >= xs[-1] / 2] if samples else []
    rows = [
        ("entry process RSS", [s.rss_mib for s in samples], [s.rss_mib for s in half]),
        ("with descendants", [s.rss_tree_mib for s in samples], [s.rss_tree_mib for s in half]),
    ]
    print()
    print(f"Command: `{' '.join(['python bench/soak.py'] + sys.argv[1:])}`  ")
    print(f"Child: `{' '.join(['python'] + cmd[1:])}`  ")
    print(f"Host: {platform.node()} ({os.cpu_count()} CPUs), {datetime.datetime.now().isoformat(timespec='seconds')}; "
          f"wall {wall / 60:.1f} min, {len(samples)} samples every {args.interval:.0f} s; CSV {csv_path}  ")
    status = "from CSV" if rc is None else "crashed" if rc != 0 else ("finished early (max_iter reached)" if died_early else "stopped by SIGINT")
    print(f"Child exit code {rc} ({status}); iterations {it}, env steps {steps}, buffer transitions {transitions}")
    print()
    print("| memory | start MiB | end MiB | max MiB | slope overall MiB/h | slope 2nd half MiB/h | "
          "Theil-Sen 2nd half MiB/h |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    xs_half = [s.elapsed_s for s in half]
    for label, ys, ys_half in rows:
        if not ys:
            print(f"| {label} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        print(f"| {label} | {_fmt(ys[0])} | {_fmt(ys[-1])} | {_fmt(max(ys))} | {_fmt(slope_per_hour(xs, ys))} | "
              f"{_fmt(slope_per_hour(xs_half, ys_half))} | {_fmt(theil_sen_per_hour(xs_half, ys_half))} |")
    print()
    print("| minute | RSS MiB | with descendants MiB | iteration | env steps | buffer transitions |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in samples:
        print(f"| {s.elapsed_s / 60:.1f} | {s.rss_mib:.1f} | {s.rss_tree_mib:.1f} | {s.iteration} | {s.env_steps} | "
              f"{s.buffer_transitions} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the child runs before SIGINT")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--exp-name", default="/tmp/soak/run", help="the child's experiment directory")
    parser.add_argument("--csv", default=None, help="where to write the samples (default: <exp-name>/soak.csv)")
    parser.add_argument("--debug", action="store_true", help="the debug config instead of the default one")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="the child's --max-iter (default: the config's; the soak stops at --minutes anyway)")
    parser.add_argument("--device", default=None, help="the child's --device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grace", type=float, default=600.0,
                        help="seconds the child gets after SIGINT to checkpoint and exit before SIGKILL")
    parser.add_argument("--from-csv", default=None, help="only print the report of an earlier soak's CSV")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(report_from_csv(arguments) if arguments.from_csv else run_soak(arguments))
