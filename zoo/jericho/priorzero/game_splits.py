"""The fixed split of the Jericho suite into games the prior may be pretrained on and games it is judged on.

Why fixed and in code: a prior pretrained on walkthroughs has seen those games' solutions, so a number measured on
them says nothing about an unseen game. Every pretraining run and every prior-quality number uses this one split, so
results stay comparable across runs and nobody can "improve" the prior by moving a hard game out of the eval set.

* ``EVAL_GAMES`` (14): never read by pretraining. Includes zork1 and detective, the games the learning runs use,
  and the eight games of the first prior pilot (905, detective, enchanter, inhumane, ludicorp, temple, zork1, zork3).
* ``TRAIN_GAMES`` (38): every other story file of the 52-game suite.

Our own game (*The Lighthouse*, ``zoo/jericho/priorzero/games``) is in neither: it is the project's test game.
Names are story-file stems (``zork1`` for ``zork1.z5``).
"""
from __future__ import annotations

import os
from pathlib import Path

EVAL_GAMES: tuple[str, ...] = (
    "905", "acorncourt", "detective", "enchanter", "inhumane", "jewel", "karn", "ludicorp", "moonlit", "reverb",
    "temple", "zenon", "zork1", "zork3",
)
TRAIN_GAMES: tuple[str, ...] = (
    "advent", "adventureland", "afflicted", "anchor", "awaken", "ballyhoo", "curses", "cutthroat", "deephome",
    "dragon", "enter", "gold", "hhgg", "hollywood", "huntdark", "infidel", "lgop", "loose", "lostpig", "lurking",
    "murdac", "night", "partyfoul", "planetfall", "plundered", "seastalker", "sherlock", "snacktime", "sorcerer",
    "spellbrkr", "spirit", "theatre", "trinity", "tryst205", "weapon", "wishbringer", "yomomma", "zork2",
)
STORY_SUFFIXES: tuple[str, ...] = (".z3", ".z4", ".z5", ".z8")


class EvalGameError(ValueError):
    """A pretraining input names a game of the eval split."""


def game_name(game: str | Path) -> str:
    """The split's name of a game given as a name or a story-file path (``../x/zork1.z5`` -> ``zork1``)."""
    path = Path(game)
    return path.stem if path.suffix in STORY_SUFFIXES else path.name


def check_train_games(games: list[str] | tuple[str, ...]) -> list[str]:
    """Return the names of ``games``; raise :class:`EvalGameError` if any of them is an eval game."""
    names = [game_name(game) for game in games]
    leaked = sorted(set(names) & set(EVAL_GAMES))
    if leaked:
        raise EvalGameError(f"eval games may never be used for pretraining: {leaked} (see game_splits.EVAL_GAMES)")
    return names


def games_dir() -> Path:
    """The suite's folder: ``$PRIORZERO_JERICHO_GAMES``, default ``../shared/jericho-games`` from the repo root."""
    default = Path(__file__).resolve().parents[3].parent / "shared" / "jericho-games"
    return Path(os.environ.get("PRIORZERO_JERICHO_GAMES", default))


def story_path(game: str | Path, directory: Path | None = None) -> Path:
    """The story file of a game name (searched in ``directory`` or :func:`games_dir`), or ``game`` if it is a file."""
    if Path(game).is_file():
        return Path(game)
    directory = directory or games_dir()
    for suffix in STORY_SUFFIXES:
        candidate = directory / f"{game}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"game {game!r} not found in {directory} (set PRIORZERO_JERICHO_GAMES)")


def resolve_games(spec: list[str] | tuple[str, ...]) -> list[str]:
    """Expand the words ``train``/``eval`` in a list of game names (order kept, duplicates dropped)."""
    names: list[str] = []
    for item in spec:
        names.extend(TRAIN_GAMES if item == "train" else EVAL_GAMES if item == "eval" else [game_name(item)])
    return list(dict.fromkeys(names))
