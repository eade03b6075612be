"""The learning benchmark's results: one evaluation point per CSV row, and what is made of the rows.

``bench/learning.py`` runs the methods and collects :class:`Point`s; this module writes and reads
``learning.csv`` (``--merge`` joins CSVs from several machines and refuses a run found in two), aggregates the points
per (method, game) over seeds, and renders the summary table (final and best returns, env steps to the threshold)
and the plot. It imports nothing of the benchmark's runner, so a report can be redone from CSVs alone.
"""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

METHODS = ("priorzero", "priorzero_frozen", "priorzero_base", "priorzero_wm_only", "llm_only", "unizero", "random")
NOT_LEARNING = ("random", "llm_only")  # evaluated at the same points; no steps-to-threshold
STYLES = {"priorzero": ("-", "o"), "priorzero_frozen": ("--", "s"), "priorzero_base": ("-", "D"),
          "priorzero_wm_only": ("--", "v"), "llm_only": (":", "P"), "unizero": ("-.", "^"), "random": (":", "x")}
LABELS = {"priorzero": "PriorZero", "priorzero_frozen": "PriorZero, LLM frozen",
          "priorzero_base": "PriorZero, base LLM", "priorzero_wm_only": "PriorZero, no LLM (world-model prior)",
          "llm_only": "LLM prior alone (argmax, no search)", "unizero": "LightZero UniZero",
          "random": "random valid action"}
SAMPLED_T = 0.5  # PriorZero's extra evaluation temperature (evaluator.extra_temperatures)
SAMPLED_COLUMN = f"eval_return_t{SAMPLED_T:g}"
SAMPLED_SCORE_COLUMN = f"eval_score_t{SAMPLED_T:g}"
CSV_COLUMNS = ["method", "game", "seed", "env_steps", "wall_s", "eval_return", SAMPLED_COLUMN, "machine", "eval_score",
               SAMPLED_SCORE_COLUMN, "train_return_last100", "encoder"]


@dataclass
class Point:
    """One evaluation: the CSV row."""

    method: str
    game: str
    seed: int
    env_steps: int
    wall_s: float
    eval_return: float
    sampled_return: float | None = None  # evaluation sampled at SAMPLED_T (PriorZero only)
    machine: str = ""  # where it ran (merged tables mix machines, so wall times need it)
    score: float | None = None  # the game's score at the end of the greedy episodes (mean)
    sampled_score: float | None = None  # the same for the SAMPLED_T episodes
    train_return: float | None = None  # mean return of the last 100 training episodes at this point
    encoder: str = ""  # the observation encoder the method used


def game_label(game: str) -> str:
    return "lighthouse (ours)" if game == "default" else Path(game).stem


def by_run(points: Iterable[Point]) -> dict[tuple[str, str], dict[int, list[Point]]]:
    """(method, game) -> seed -> points sorted by env steps."""
    out: dict[tuple[str, str], dict[int, list[Point]]] = {}
    for p in points:
        out.setdefault((p.method, p.game), {}).setdefault(p.seed, []).append(p)
    for seeds in out.values():
        for runs in seeds.values():
            runs.sort(key=lambda p: p.env_steps)
    return out


def mean_curve(seeds: dict[int, list[Point]], field: str = "eval_return") -> list[tuple[int, float, float, float]]:
    """(env steps, mean, min, max) over seeds of ``field`` at each evaluation index (points of a seed line up by
    index); indices where a seed lacks the value are left out."""
    length = min(len(r) for r in seeds.values())
    curve = []
    for i in range(length):
        values = [getattr(r[i], field) for r in seeds.values()]
        if None in values:
            continue
        steps = int(statistics.mean(r[i].env_steps for r in seeds.values()))
        curve.append((steps, statistics.mean(values), min(values), max(values)))
    return curve


def thresholds(runs: dict[tuple[str, str], dict[int, list[Point]]], games: list[str], given: float | None) -> dict[str, float | None]:
    """--threshold, or per game the random agent's mean return over all its evaluations (what 'learned' must beat)."""
    out: dict[str, float | None] = {}
    for game in games:
        if given is not None:
            out[game] = given
            continue
        values = [p.eval_return for r in runs.get(("random", game), {}).values() for p in r]
        out[game] = statistics.mean(values) if values else None
    return out


def mean_sd(values: list[float | None]) -> str:
    """``mean ± sd`` over seeds, or a dash when a seed has no value."""
    if not values or None in values:
        return "—"
    return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


SUMMARY_HEADER = ("| game | method | final return (mean ± sd over seeds) | final T=0.5 return | final score "
                  "| training return (last 100 episodes) | best mean return @ env steps | env steps to threshold "
                  "| wall s (mean) | seeds / env steps | encoder | machine |")


def summary_rows(runs, games: list[str], methods: list[str], failures: dict, limits: dict[str, float | None]):
    rows = []
    for game in games:
        for method in methods:
            seeds = runs.get((method, game))
            label = [game_label(game), LABELS[method]]
            if not seeds:
                why = failures.get((method, game), "no evaluation points")
                rows.append(label + ["not run: " + why] + ["—"] * (SUMMARY_HEADER.count("|") - 4))
                continue
            finals = [r[-1].eval_return for r in seeds.values()]
            last = [r[-1] for r in seeds.values()]
            curve = mean_curve(seeds)
            best = max(curve, key=lambda c: c[1])
            limit = limits.get(game)
            reached = next((c[0] for c in curve if limit is not None and c[1] >= limit and c[1] > 0), None)
            walls = [r[-1].wall_s for r in seeds.values()]
            rows.append(label + [mean_sd(finals), mean_sd([p.sampled_return for p in last]),
                                 mean_sd([p.score for p in last]), mean_sd([p.train_return for p in last]),
                                 f"{best[1]:.2f} @ {best[0]:,}",
                                 "—" if method in NOT_LEARNING else "never" if reached is None else f"{reached:,}",
                                 f"{statistics.mean(walls):,.0f}", f"{len(seeds)} / {curve[-1][0]:,}"
                                 + (f" (incomplete: {failures[(method, game)].split(':')[0]})"
                                    if (method, game) in failures else ""),
                                 ", ".join(sorted({p.encoder for p in last} - {""})) or "—",
                                 ", ".join(sorted({p.machine for r in seeds.values() for p in r} - {""})) or "—"])
    return rows


def write_summary(header: list[str], runs, failures, games: list[str], methods: list[str],
                  threshold: float | None) -> str:
    limits = thresholds(runs, games, threshold)
    lines = header + [
        "Threshold: " + ", ".join(f"{game_label(g)} {'n/a' if v is None else f'{v:.2f}'}" for g, v in limits.items())
        + (" (given)" if threshold is not None else " (the random agent's mean evaluation return)")
        + "; reached where a method's mean return is at least the threshold and above 0\n",
        "Returns are sums of score changes; scores are the game's own score at an episode's end (some games start "
        "above 0).\n",
        SUMMARY_HEADER,
        "|---|---|" + "---:|" * 8 + "---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(runs, games, methods, failures, limits)]
    if failures:
        lines += ["", "Runs that did not finish: " + "; ".join(f"{LABELS[m]} on {game_label(g)}: {why}"
                                                              for (m, g), why in failures.items())]
    return "\n".join(lines)


PLOT_ROWS = (("eval_return", "greedy evaluation"), ("sampled_return", f"evaluation sampled at T={SAMPLED_T:g}"),
             ("train_return", "training return, last 100 episodes"))


def plot(runs, games: list[str], methods: list[str], path: Path) -> None:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # DI-engine's import leaves the root logger at DEBUG
    import matplotlib.pyplot as plt

    panels = [(field, title) for field, title in PLOT_ROWS
              if any(getattr(p, field) is not None for seeds in runs.values() for r in seeds.values() for p in r)]
    fig, axes = plt.subplots(len(panels), len(games), figsize=(5 * len(games), 3.6 * len(panels)), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}  # one colour per method in every panel
    for row, (field, title) in enumerate(panels):
        for ax, game in zip(axes[row], games):
            for method in methods:
                seeds = runs.get((method, game))
                curve = mean_curve(seeds, field) if seeds else []
                if not curve:
                    continue
                xs = [c[0] for c in curve]
                style, marker = STYLES[method]  # distinct styles: equal curves (e.g. all zeros) stay visible
                ax.plot(xs, [c[1] for c in curve], linestyle=style, marker=marker, ms=4, color=colors[method],
                        label=LABELS[method])
                if len(seeds) > 1:
                    ax.fill_between(xs, [c[2] for c in curve], [c[3] for c in curve], color=colors[method],
                                    alpha=0.15)
            ax.set_title(f"{game_label(game)}: {title}")
            ax.set_xlabel("env steps")
            ax.set_ylabel("return (mean over seeds, min-max band)")
            ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}  # every method plotted in any panel, not only those of the first game
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    axes[0][0].legend(list(handles.values()), list(handles), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_csv(path: Path) -> list[Point]:
    """Points of a learning.csv (older ones lack the later columns: those values are None / empty)."""
    def number(row: dict, key: str) -> float | None:
        return float(row[key]) if row.get(key) else None

    with open(path, newline="") as handle:
        return [Point(row["method"], row["game"], int(row["seed"]), int(row["env_steps"]), float(row["wall_s"]),
                      float(row["eval_return"]), number(row, SAMPLED_COLUMN), row.get("machine", ""),
                      number(row, "eval_score"), number(row, SAMPLED_SCORE_COLUMN),
                      number(row, "train_return_last100"), row.get("encoder") or "")
                for row in csv.DictReader(handle)]


def merged_points(paths: list[str]) -> list[Point]:
    """The points of several CSVs; a run (method, game, seed) found in two of them is an error, not a mix."""
    points, origin = [], {}
    for path in paths:
        for point in read_csv(Path(path)):
            run = (point.method, point.game, point.seed)
            if origin.setdefault(run, path) != path:
                raise SystemExit(f"{point.method} on {point.game}, seed {point.seed}, is in both {origin[run]} and "
                                 f"{path}: merge runs of one configuration (a --priorzero-override variant is a "
                                 f"separate comparison)")
            points.append(point)
    return points


def source_lines(paths: list[str]) -> list[str]:
    """Each merged CSV with the command, device and protocol lines of the summary written beside it."""
    lines = []
    for path in map(Path, paths):
        lines.append(f"Source `{path.name}` ({path.parent.name}):  ")
        summary = path.with_name("summary.md")
        if summary.is_file():
            keep = ("Command:", "Device:", "Protocol:")
            lines += ["- " + line for line in summary.read_text().splitlines() if line.startswith(keep)]
    return lines


def write_csv(points: list[Point], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for p in points:
            def opt(value: float | None) -> str:
                return "" if value is None else f"{value:g}"

            writer.writerow([p.method, game_label(p.game), p.seed, p.env_steps, f"{p.wall_s:.1f}", f"{p.eval_return:g}",
                             opt(p.sampled_return), p.machine, opt(p.score), opt(p.sampled_score),
                             opt(p.train_return), p.encoder])
