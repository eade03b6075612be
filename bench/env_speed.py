"""Env speed: plain steps/s and valid-action latency (cold and cached) on our game, zork1 and detective.

Run from the repository root::

    python bench/env_speed.py            # 40 walkthrough states per game
    python bench/env_speed.py --quick    # 10 states, fewer plain steps

*Plain step* is ``PriorZeroJerichoEnv.step`` with a string action and valid-action generation off (emulator
step + score/end checks + tokenization); *raw emulator* is the backend's ``step`` alone. *Cold* valid actions
are computed by the worker process for states along the walkthrough (IPC included, cache off); *cached* is the
same states answered from the LRU cache, including computing the state key the env asks it with.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class GameTimings:
    game: str
    backend: str
    env_steps_per_s: float
    raw_steps_per_s: float
    cold_ms: list[float]
    cached_ms: list[float]
    mean_valid_actions: float
    extractor: str


def _games_dir() -> Path:
    return Path(os.environ.get("PRIORZERO_JERICHO_GAMES", REPO_ROOT.parent / "shared" / "jericho-games"))


def _walkthrough_for(story) -> list[str]:
    from zoo.jericho.priorzero.envs.game_backend import open_game
    from zoo.jericho.priorzero.games import DEFAULT_WALKTHROUGH

    if not story.jericho_supported:
        return list(DEFAULT_WALKTHROUGH)
    backend = open_game(story, None)
    walkthrough = backend.walkthrough()
    backend.close()
    return walkthrough


def measure_plain_steps(game_path: Path, walkthrough: list[str], steps: int, tokenizer_path: str | None,
                        look_and_inventory: bool = True) -> float:
    """Env steps/s replaying ``walkthrough`` without valid-action generation (``look_and_inventory`` as configured)."""
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    env = PriorZeroJerichoEnv({"game_path": str(game_path), "generate_valid_actions": False,
                               "look_and_inventory": look_and_inventory,
                               "max_steps": len(walkthrough), "tokenizer_path": tokenizer_path})
    env.reset()
    done_steps, position, start = 0, 0, time.perf_counter()
    while done_steps < steps:
        timestep = env.step(walkthrough[position])
        done_steps += 1
        position += 1
        if timestep.done or position == len(walkthrough):
            env.reset()
            position = 0
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def measure_raw_steps(story, walkthrough: list[str], steps: int) -> float:
    from zoo.jericho.priorzero.envs.game_backend import open_game

    backend = open_game(story, None)
    backend.reset()
    position, start = 0, time.perf_counter()
    for _ in range(steps):
        backend.step(walkthrough[position])
        position += 1
        if position == len(walkthrough):
            backend.reset()
            position = 0
    elapsed = time.perf_counter() - start
    backend.close()
    return steps / elapsed


def measure_valid_actions(story, walkthrough: list[str], states: int, extractor: str,
                          timeout_s: float) -> tuple[list[float], list[float], float, str]:
    from zoo.jericho.priorzero.envs.game_backend import open_game
    from zoo.jericho.priorzero.envs.valid_actions import ValidActionGenerator

    backend = open_game(story, None)
    backend.reset()
    snapshots = []
    for action in walkthrough[:states]:
        snapshots.append((backend.get_state(), backend.state_key()))
        backend.step(action)
    generator = ValidActionGenerator(story, None, timeout_s, cache_size=len(snapshots) + 1,
                                     object_extractor=extractor)
    generator.get(*snapshots[0])  # start the worker outside the timings (process start, spaCy load)
    generator._cache.clear()  # noqa: SLF001 - benchmark wants every first request cold
    cold, counts = [], []
    for state, world_hash in snapshots:
        result = generator.get(state, world_hash)
        cold.append(result.seconds * 1000)
        counts.append(len(result.actions))
    cached = []
    for state, _ in snapshots:
        start = time.perf_counter()
        backend.set_state(state)
        generator.get(state, backend.state_key())
        cached.append((time.perf_counter() - start) * 1000)
    extractor_in_use = generator.extractor_in_use or "?"
    generator.close()
    backend.close()
    return cold, cached, float(np.mean(counts)), extractor_in_use


def run_game(game_path: Path, args: argparse.Namespace) -> GameTimings:
    from zoo.jericho.priorzero.envs.game_backend import inspect_story

    story = inspect_story(game_path)
    walkthrough = _walkthrough_for(story)
    env_rate = measure_plain_steps(game_path, walkthrough, args.plain_steps, args.tokenizer_path)
    raw_rate = measure_raw_steps(story, walkthrough, args.plain_steps)
    cold, cached, mean_count, extractor = measure_valid_actions(story, walkthrough, args.states, args.extractor,
                                                                args.timeout_s)
    backend = "jericho" if story.jericho_supported else "zmachine-adapter"
    return GameTimings(game_path.name, backend, env_rate, raw_rate, cold, cached, mean_count, extractor)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for package in ("jericho", "DI-engine", "transformers", "spacy"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} -")
    return ", ".join(parts)


def _device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"CPU {cpu}, {os.cpu_count()} cores, load average {load:.1f} at start"


def print_table(rows: list[GameTimings], command: str) -> None:
    print(f"Command: `{command}`  \nDevice: {_device()}  \nVersions: {_versions()}\n")
    print("| game | backend | extractor | env plain step/s | raw emulator step/s | states | mean #valid | "
          "cold p50 ms | cold p95 ms | cached p50 ms | cached p95 ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cold50, cold95 = np.percentile(row.cold_ms, [50, 95])
        hit50, hit95 = np.percentile(row.cached_ms, [50, 95])
        print(f"| {row.game} | {row.backend} | {row.extractor} | {row.env_steps_per_s:.0f} | "
              f"{row.raw_steps_per_s:.0f} | {len(row.cold_ms)} | {row.mean_valid_actions:.1f} | {cold50:.1f} | "
              f"{cold95:.1f} | {hit50:.2f} | {hit95:.2f} |")


def main(argv: list[str] | None = None) -> None:
    from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH

    parser = argparse.ArgumentParser(description="PriorZero env speed benchmark")
    parser.add_argument("--quick", action="store_true", help="10 states and 500 plain steps per game")
    parser.add_argument("--games", nargs="*", default=["default", "zork1.z5", "detective.z5"],
                        help="'default' (our game) and/or story names in $PRIORZERO_JERICHO_GAMES")
    parser.add_argument("--states", type=int, default=40, help="walkthrough states for valid-action latency")
    parser.add_argument("--plain-steps", type=int, default=2000, help="steps for the steps/s figures")
    parser.add_argument("--extractor", default="auto", choices=["auto", "rules", "spacy"])
    parser.add_argument("--timeout-s", type=float, default=60.0, help="valid-action timeout per state")
    parser.add_argument("--tokenizer-path", default=None, help="HF tokenizer dir (default: the tiny model)")
    args = parser.parse_args(argv)
    if args.quick:
        args.states, args.plain_steps = 10, 500
    warnings.simplefilter("ignore")
    rows = []
    for game in args.games:
        path = DEFAULT_GAME_PATH if game == "default" else _games_dir() / game
        if not path.is_file():
            print(f"skipping {game}: {path} not found", file=sys.stderr)
            continue
        rows.append(run_game(path, args))
    print_table(rows, "python bench/env_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
