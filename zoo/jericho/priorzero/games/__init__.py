"""Our own default game, *The Lighthouse* (original Inform 6 source, MIT), with its walkthrough.

The story file and its adapter metadata are committed; ``python -m zoo.jericho.priorzero.games.build``
rebuilds both from ``lighthouse.inf``. The walkthrough uses the nouns the generic Z-machine adapter picks
for each object (last word of the object's printed name), so a test can check that every step's action is
among the generated valid actions.
"""
from __future__ import annotations

from pathlib import Path

GAMES_DIR: Path = Path(__file__).resolve().parent
DEFAULT_GAME_PATH: Path = GAMES_DIR / "lighthouse.z5"
DEFAULT_METADATA_PATH: Path = GAMES_DIR / "lighthouse.json"
DEFAULT_MAX_SCORE: int = 12

# 19 moves, 12 points in 7 awards (dig 2, lamp 1, light 2, unlock 1, lens 1, holder 2, lever 3), then a win.
DEFAULT_WALKTHROUGH: list[str] = [
    "take shovel",
    "east",
    "dig mound",
    "take key",
    "west",
    "north",
    "west",
    "open cupboard",
    "take lamp",
    "take matchbox",
    "light lamp",
    "east",
    "unlock door with key",
    "open door",
    "north",
    "take lens",
    "up",
    "put lens in holder",
    "pull lever",
]

__all__ = ["DEFAULT_GAME_PATH", "DEFAULT_METADATA_PATH", "DEFAULT_MAX_SCORE", "DEFAULT_WALKTHROUGH", "GAMES_DIR"]
