"""States along a Jericho game's walkthrough, with the env's valid actions and which of them are "right".

Why: the prior's quality (does it rank the walkthrough's move high among the valid actions?) and its pretraining
both need (history, observation, candidates, gold) records that look exactly like what the prior sees during
search. They are built by playing the walkthrough through :class:`PriorZeroJerichoEnv` with the full preset's
env settings (same valid-action generator, same cap, same look+inventory observation text).

Gold: the walkthrough's command is often not literally a valid action ("n" vs "north", "get all" vs "take lamp"),
so a candidate is gold when it reaches the same world-state hash as the walkthrough's command. States with fewer
than two candidates, no gold, or only gold say nothing about a ranking and are skipped.

Valid-action generation costs about a second per state, so results are cached as JSON under
``$PRIORZERO_CACHE/walkthrough_states/<game>-<key>.json`` (key: a hash of everything that changes the result; the
states are a prefix of the walkthrough, so a build of more states also answers a request for fewer), and the CLI
builds many games in parallel, one process per game, each stopped after ``--timeout-s`` with the states it found::

    python -m zoo.jericho.priorzero.walkthrough_states --games train --max-states 100 --jobs 16 --timeout-s 280 --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from lzero_ext.llm.types import Turn
from zoo.jericho.priorzero.game_splits import game_name, resolve_games, story_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the building logic changes what a cached file holds
# The full preset's env settings that shape candidates and observations (priorzero_config._FULL); the rest are the
# env's defaults.
ENV_SETTINGS: dict = dict(action_space_size=64, max_valid_actions=20, look_and_inventory=True,
                          valid_action_timeout_s=15.0, object_extractor="auto")


@dataclass(frozen=True)
class WalkthroughState:
    """One walkthrough state as the prior sees it; ``gold`` indexes the candidates equivalent to the walkthrough's move."""

    game: str
    step: int  # walkthrough position: the state before the step-th command (0 = after reset)
    history: tuple[Turn, ...]  # earlier turns, oldest first
    observation: str
    candidates: tuple[str, ...]
    gold: tuple[int, ...]


def _cache_key(path: Path, max_states: int | None, settings: dict) -> str:
    from zoo.jericho.priorzero.envs.valid_actions import installed_spacy_model

    extractor = settings["object_extractor"]
    if extractor == "auto":  # 'auto' means whichever extractor this machine has
        extractor = f"auto:{installed_spacy_model() or 'rules'}"
    payload = json.dumps({
        "format": FORMAT_VERSION, "story_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "max_states": max_states, "settings": {**settings, "object_extractor": extractor},
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _walk(path: Path, max_states: int | None, settings: dict, max_seconds: float | None = None) -> dict:
    """Play the walkthrough; return the JSON-able record (turns once per game, states by reference into them).

    Stopped by ``max_seconds``, the record holds the k states found so far and says ``max_states = k``: exactly what
    a build for k states holds, so it is cached and found as one.
    """
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    env = PriorZeroJerichoEnv(dict(game_path=str(path), max_steps=10**6, **settings))
    observations, actions, rewards, states = [], [], [], []
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        obs = env.reset()
        # Private on purpose: gold needs to try commands on the env's own emulator state (and its walkthrough).
        backend = env._backend  # noqa: SLF001
        for step, command in enumerate(backend.walkthrough()):
            if max_states is not None and len(states) >= max_states:
                break
            if deadline is not None and time.monotonic() > deadline:
                max_states = len(states)
                break
            observations.append(obs["raw_obs_text"])
            candidates = list(obs["valid_actions"])
            saved = backend.get_state()
            hashes = []
            for action in [command, *candidates]:
                backend.step(action)
                hashes.append(backend.world_state_hash())
                backend.set_state(saved)
            gold = [i for i, h in enumerate(hashes[1:]) if h == hashes[0]]
            if len(candidates) >= 2 and 0 < len(gold) < len(candidates):
                states.append({"step": step, "candidates": candidates, "gold": gold})
            timestep = env.step(command)
            actions.append(command)
            rewards.append(float(timestep.reward[0]))
            obs = timestep.obs
            if timestep.done:
                break
    finally:
        env.close()
    return {"game": game_name(path), "format": FORMAT_VERSION, "settings": settings, "max_states": max_states,
            "observations": observations, "actions": actions, "rewards": rewards, "states": states}


def _to_states(record: dict) -> list[WalkthroughState]:
    observations, actions, rewards = record["observations"], record["actions"], record["rewards"]
    return [
        WalkthroughState(
            game=record["game"], step=s["step"],
            history=tuple(Turn(observations[i], actions[i], rewards[i]) for i in range(s["step"])),
            observation=observations[s["step"]], candidates=tuple(s["candidates"]), gold=tuple(s["gold"]),
        )
        for s in record["states"]
    ]


def cache_file(game_path: str | Path, max_states: int | None = None, cache_dir: str | Path | None = None,
               settings: dict | None = None) -> Path:
    """Where :func:`load_walkthrough_states` keeps (or finds) the states of this game and size."""
    from lzero_ext.llm.default_model import default_cache_root

    path = story_path(game_path)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_root() / "walkthrough_states"
    return directory / f"{game_name(path)}-{_cache_key(path, max_states, settings or ENV_SETTINGS)}.json"


def cached_builds(game_path: str | Path, cache_dir: str | Path | None = None) -> dict[int | None, Path]:
    """Cached builds of this story file with these env settings, by size (their cache key is recomputed)."""
    directory = cache_file(game_path, None, cache_dir).parent
    builds = {}
    for path in directory.glob(f"{game_name(story_path(game_path))}-*.json"):
        try:
            size = json.loads(path.read_text())["max_states"]
        except (OSError, ValueError, KeyError) as error:  # a damaged file is not a build; rebuilding replaces it
            logger.warning("unreadable walkthrough-state cache file %s ignored: %s", path, error)
            continue
        if cache_file(game_path, size, cache_dir) == path:
            builds[size] = path
    return builds


def _covers(size: int | None, max_states: int | None) -> bool:
    return size is None or (max_states is not None and size >= max_states)


def _size_order(size: int | None) -> float:
    return float("inf") if size is None else size


def _smallest_covering(builds: dict[int | None, Path], max_states: int | None) -> Path | None:
    covering = [size for size in builds if _covers(size, max_states)]
    return builds[min(covering, key=_size_order)] if covering else None


def _read_prefix(path: Path, max_states: int | None) -> list[WalkthroughState]:
    return _to_states(json.loads(path.read_text()))[:max_states]


def load_walkthrough_states(game_path: str | Path, max_states: int | None = None,
                            cache_dir: str | Path | None = None, max_seconds: float | None = None,
                            ) -> list[WalkthroughState]:
    """The first ``max_states`` usable states of the game's walkthrough (from the smallest cached build that holds
    them; built and cached on a miss).

    ``game_path``: a story file or a suite game name. ``cache_dir``: default ``$PRIORZERO_CACHE/walkthrough_states``.
    ``max_seconds``: a build stops there with fewer states (cached as a build of that many).
    """
    found = _smallest_covering(cached_builds(game_path, cache_dir), max_states)
    if found is not None:
        return _read_prefix(found, max_states)
    record = _walk(story_path(game_path), max_states, dict(ENV_SETTINGS), max_seconds)
    target = cache_file(game_path, record["max_states"], cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary file and renamed: a concurrent reader never sees half a file.
    with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as handle:
        json.dump(record, handle)
    os.replace(handle.name, target)
    return _to_states(record)


def load_cached_prefix(game_path: str | Path, max_states: int | None = None,
                       cache_dir: str | Path | None = None) -> list[WalkthroughState] | None:
    """The first ``max_states`` states of the smallest cached build that covers them, else of the largest one
    (None if nothing is cached).

    Why: states are a prefix of the walkthrough, so a build for 100 states also answers a request for 30, and a
    slow game built only to 30 states still contributes them to a request for 100 (pretraining takes "up to N per
    game").
    """
    builds = cached_builds(game_path, cache_dir)
    if not builds:
        return None
    found = _smallest_covering(builds, max_states) or builds[max(builds, key=_size_order)]
    return _read_prefix(found, max_states)


KILL_GRACE_S = 120.0  # a child past its --timeout-s finishes its current state first; killed if it takes this long


def _build_in_subprocess(game: str, max_states: int | None, cache_dir: str | None,
                         timeout_s: float | None) -> str:
    """One game in its own interpreter: an emulator crash (seen on the GPU machine) then loses that game only,
    where a crashed process-pool worker broke the whole pool."""
    command = [sys.executable, "-m", "zoo.jericho.priorzero.walkthrough_states", "--games", game, "--jobs", "1"]
    command += [] if max_states is None else ["--max-states", str(max_states)]
    command += [] if cache_dir is None else ["--out", str(cache_dir)]
    command += [] if timeout_s is None else ["--timeout-s", str(timeout_s)]
    start = time.perf_counter()
    kill_after = None if timeout_s is None else timeout_s + KILL_GRACE_S
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=kill_after)
    except subprocess.TimeoutExpired:
        return f"{game}: FAILED killed after {kill_after:.0f} s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{game}: FAILED exit {result.returncode}: {last}"
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else f"{game}: done in " \
        f"{time.perf_counter() - start:.0f} s"


def main(argv: list[str] | None = None) -> None:
    """Build (or find cached) walkthrough states for many games, each in its own process, ``--jobs`` at a time."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", nargs="+", default=["train", "eval"],
                        help="game names; 'train'/'eval' expand to game_splits' lists")
    parser.add_argument("--max-states", type=int, default=None, help="usable states per game (default: all)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="parallel games")
    parser.add_argument("--out", default=None, help="cache folder (default $PRIORZERO_CACHE/walkthrough_states)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="per-game limit: the walk stops and keeps (caches) the states found (default none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    games = resolve_games(args.games)
    if args.jobs == 1 and len(games) == 1:  # the unit of work (also what each parallel child runs)
        start = time.perf_counter()
        states = load_walkthrough_states(games[0], args.max_states, args.out, args.timeout_s)
        print(f"{games[0]}: {len(states)} states in {time.perf_counter() - start:.0f} s", flush=True)
        return
    from lzero_ext.llm.default_model import ensure_default_model

    ensure_default_model()  # the env's tokenizer; built once here rather than by every child at once
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_build_in_subprocess, game, args.max_states, args.out, args.timeout_s)
                   for game in games]
        for future in as_completed(futures):
            print(future.result(), flush=True)
    print(f"done: {len(games)} games in {time.perf_counter() - start:.0f} s", flush=True)

if __name__ == "__main__":
    main()
