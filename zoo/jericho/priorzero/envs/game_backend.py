"""One interface over Jericho-supported games and our own adapter, plus story-file checks.

The env and the valid-action worker both open games through :func:`open_game`, so they agree on which
backend a story file gets: Jericho's own bindings when it knows the game, else the generic Z-machine adapter
driven by the ``<story>.json`` metadata written by ``games/build.py``.
"""
from __future__ import annotations

import hashlib
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zoo.jericho.priorzero.envs.zmachine_adapter import GameMetadata, ZMachineAdapter

logger = logging.getLogger(__name__)

_MIN_STORY_BYTES = 64  # the Z-machine header alone is 64 bytes
_MAX_STORY_BYTES = 512 * 1024  # the largest legal story (V8) is 512 KiB


class GameBackend(Protocol):
    """What the env needs from a game: text in/out, score, end flags, a world hash and valid actions.

    ``world_state_hash`` is Jericho's own hash (walkthrough states compare actions by it); ``state_key`` is a key for
    caches that is cheap to compute and at least as fine (equal keys mean equal world hashes).
    """

    story_path: Path
    max_score: int

    def reset(self) -> str: ...
    def step(self, action: str) -> str: ...
    def score(self) -> int: ...
    def moves(self) -> int: ...
    def victory(self) -> bool: ...
    def game_over(self) -> bool: ...
    def world_state_hash(self) -> str: ...
    def state_key(self) -> str: ...
    def get_state(self) -> tuple: ...
    def set_state(self, state: tuple) -> None: ...
    def valid_actions(self) -> list[str]: ...
    def walkthrough(self) -> list[str]: ...
    def close(self) -> None: ...


class JerichoBackend:
    """A game Jericho has bindings for: everything comes from ``FrotzEnv``."""

    def __init__(self, story_path: Path, seed: int | None) -> None:
        from jericho import FrotzEnv

        self.story_path = Path(story_path)
        self._env = FrotzEnv(str(self.story_path), seed=seed)
        self.max_score = int(self._env.get_max_score())

    def reset(self) -> str:
        return self._env.reset()[0]

    def step(self, action: str) -> str:
        return self._env.step(action)[0]

    def score(self) -> int:
        return int(self._env.get_score())

    def moves(self) -> int:
        return int(self._env.get_moves())

    def victory(self) -> bool:
        return bool(self._env.victory())

    def game_over(self) -> bool:
        return bool(self._env.game_over())

    def world_state_hash(self) -> str:
        return self._env.get_world_state_hash()

    def state_key(self) -> str:
        """md5 of the raw bytes of the cleaned object tree and the special RAM: the fields Jericho's world hash
        formats as text (object numbers, names, links, attributes, properties), so equal keys mean equal world hashes.

        Why not the world hash itself: formatting every object as text takes Jericho about 5 ms a call on zork1
        (cProfile of a world-model-only run: 17 s of 163), once per env step for the valid-action cache.
        """
        digest = hashlib.md5(bytes(self._env.get_world_objects(clean=True)))
        digest.update(self._env._get_special_ram().tobytes())  # noqa: SLF001 - as get_world_state_hash reads it
        return digest.hexdigest()

    def get_state(self) -> tuple:
        return self._env.get_state()

    def set_state(self, state: tuple) -> None:
        self._env.set_state(state)

    def valid_actions(self) -> list[str]:
        # use_parallel=False: our worker process is the parallelism; Jericho's own mp.Pool would start
        # os.cpu_count() more processes per env.
        return list(self._env.get_valid_actions(use_object_tree=True, use_ctypes=True, use_parallel=False))

    def dictionary_words(self) -> list[tuple[str, bool, bool]]:
        """(word, is_noun, is_adj) for each dictionary word, for the rule-based object extractor."""
        return [(w.word, bool(w.is_noun), bool(w.is_adj)) for w in self._env.get_dictionary()]

    def walkthrough(self) -> list[str]:
        return list(self._env.get_walkthrough())

    def close(self) -> None:
        self._env.close()


@dataclass(frozen=True)
class StoryInfo:
    """What the header check found out about a story file."""

    path: Path
    zversion: int
    jericho_supported: bool
    metadata_path: Path | None


def check_story_file(path: Path) -> int:
    """Raise FileNotFoundError/ValueError unless ``path`` looks like a Z-machine story; return its version."""
    if not path.exists():
        raise FileNotFoundError(f"Game story file not found: {path}")
    if not path.is_file():
        raise ValueError(f"Game path is not a file: {path}")
    size = path.stat().st_size
    if not _MIN_STORY_BYTES <= size <= _MAX_STORY_BYTES:
        raise ValueError(f"Not a Z-machine story file (size {size} bytes outside 64 B..512 KiB): {path}")
    header = path.read_bytes()[:_MIN_STORY_BYTES]
    version = header[0]
    if not 1 <= version <= 8:
        raise ValueError(f"Not a Z-machine story file (header version byte {version}, expected 1-8): {path}")
    high_memory = (header[4] << 8) | header[5]
    if not 0 < high_memory <= size:
        raise ValueError(f"Not a Z-machine story file (high-memory base {high_memory} outside the file): {path}")
    return version


def _jericho_supports(path: Path) -> bool:
    """Ask Jericho's C side whether it has bindings (score, moves, valid actions) for this story."""
    from jericho import FrotzEnv, UnsupportedGameWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = FrotzEnv(str(path), seed=0)
        supported = bool(env.is_fully_supported) and bool(env.bindings)
        env.close()
    if not supported and not any(issubclass(w.category, UnsupportedGameWarning) for w in caught):
        logger.debug("Jericho gave no bindings for %s", path)
    return supported


def inspect_story(path: Path, metadata_path: Path | None = None) -> StoryInfo:
    """Check the file and decide the backend; unsupported games need adapter metadata next to them."""
    path = Path(path)
    version = check_story_file(path)
    if _jericho_supports(path):
        return StoryInfo(path, version, True, None)
    metadata_path = Path(metadata_path) if metadata_path else path.with_suffix(".json")
    if not metadata_path.is_file():
        raise ValueError(
            f"Jericho has no bindings for {path} and no adapter metadata was found at {metadata_path}. "
            "Compile an Inform 6 game with `python -m zoo.jericho.priorzero.games.build --source <game.inf>` "
            "to get one, or set game_metadata_path."
        )
    return StoryInfo(path, version, False, metadata_path)


def open_game(info: StoryInfo, seed: int | None) -> JerichoBackend | ZMachineAdapter:
    """Open the backend :func:`inspect_story` chose. ``seed=None``: the walkthrough's seed, else 0."""
    if info.jericho_supported:
        return JerichoBackend(info.path, seed)
    return ZMachineAdapter(info.path, GameMetadata.load(info.metadata_path), seed=seed or 0)


_PROMPT_PATTERN = re.compile(r"^\s*>\s*|\s*>\s*$")


def clean_observation(text: str) -> str:
    """Strip the interpreter's leading/trailing '>' prompt and surrounding whitespace."""
    return _PROMPT_PATTERN.sub("", text).strip()
