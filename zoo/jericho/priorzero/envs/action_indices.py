"""Action indices for text commands: which of the world model's ``A`` discrete actions a command is.

UniZero's world model embeds an action by its index. With LightZero's Jericho convention (index i = the i-th
valid action) the same index means "north" in one room and "take lamp" in the next, so nothing the model learns
about an index carries over between states. Hashing the command's text gives every command the same index in
every state; only commands that collide inside one state are moved (deterministically, by text order) to the next
free index.
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import numpy as np

ACTION_INDEX_MODES = ("text_hash", "list")


def max_candidates(action_space_size: int, mode: str, max_valid_actions: int | None = None) -> int:
    """Most valid actions kept per state: ``max_valid_actions`` if set, else every index for ``list`` and half of
    them for ``text_hash`` (fewer commands, fewer collisions)."""
    if max_valid_actions is not None:
        return int(max_valid_actions)
    return action_space_size if mode == "list" else max(1, action_space_size // 2)


def text_hash_index(command: str, num_actions: int) -> int:
    """The home index of ``command``: CRC-32 of its normalised text modulo ``num_actions`` (stable across runs,
    processes and machines, unlike Python's salted ``hash``)."""
    return zlib.crc32(" ".join(command.lower().split()).encode("utf-8")) % num_actions


def assign_action_indices(commands: Sequence[str], num_actions: int, mode: str = "text_hash") -> np.ndarray:
    """Distinct action indices ``[len(commands)]`` (int64) in ``[0, num_actions)`` for the commands of one state."""
    if len(commands) > num_actions:
        raise ValueError(f"{len(commands)} commands do not fit {num_actions} action indices")
    if mode == "list":
        return np.arange(len(commands), dtype=np.int64)
    if mode != "text_hash":
        raise ValueError(f"action index mode must be one of {ACTION_INDEX_MODES}, got {mode!r}")
    indices = np.empty(len(commands), dtype=np.int64)
    taken = np.zeros(num_actions, dtype=bool)
    # Text order decides who keeps a contested index, so the winner does not depend on the game's list order.
    for position in sorted(range(len(commands)), key=lambda i: commands[i]):
        index = text_hash_index(commands[position], num_actions)
        while taken[index]:
            index = (index + 1) % num_actions
        taken[index] = True
        indices[position] = index
    return indices


def action_for(obs: Mapping[str, Any], command: str) -> int:
    """The discrete action that executes ``command`` in the env observation ``obs`` (scripted play, tests)."""
    valid = list(obs["valid_actions"])
    if command not in valid:
        raise ValueError(f"{command!r} is not a valid action here; valid actions: {valid}")
    return int(obs["action_indices"][valid.index(command)])
