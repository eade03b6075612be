"""Action indices of text commands: distinct per state, the same for a command in every state."""
import zlib

import numpy as np
import pytest

from zoo.jericho.priorzero.envs.action_indices import action_for, assign_action_indices, text_hash_index

COMMANDS = ["north", "take lamp", "open cupboard", "east", "dig mound", "put lens in holder", "west", "up"]


def test_indices_are_distinct_and_in_range():
    indices = assign_action_indices(COMMANDS, 16)
    assert len(set(indices.tolist())) == len(COMMANDS)
    assert indices.min() >= 0 and indices.max() < 16 and indices.dtype == np.int64


def test_a_command_keeps_its_index_whatever_the_order_and_the_other_commands():
    first = dict(zip(COMMANDS, assign_action_indices(COMMANDS, 64).tolist()))
    shuffled = list(reversed(COMMANDS[2:]))
    second = dict(zip(shuffled, assign_action_indices(shuffled, 64).tolist()))
    for command in shuffled:
        assert first[command] == second[command] == text_hash_index(command, 64)


def test_collisions_move_the_later_command_in_text_order_to_the_next_free_index():
    num = 4
    by_home: dict[int, list[str]] = {}
    for word in (f"cmd{i}" for i in range(40)):
        by_home.setdefault(text_hash_index(word, num), []).append(word)
    home, (a, b) = next((h, sorted(words)[:2]) for h, words in by_home.items() if len(words) >= 2)
    for order in ([a, b], [b, a]):
        indices = dict(zip(order, assign_action_indices(order, num).tolist()))
        assert indices[a] == home and indices[b] == (home + 1) % num


def test_hash_ignores_case_and_repeated_spaces_and_is_stable():
    assert text_hash_index("Take  Lamp", 1000) == text_hash_index("take lamp", 1000)
    # CRC-32 does not depend on the process (Python's hash() is salted per process).
    assert text_hash_index("take lamp", 97) == zlib.crc32(b"take lamp") % 97


def test_list_mode_is_the_position():
    assert assign_action_indices(COMMANDS, 8, mode="list").tolist() == list(range(8))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        assign_action_indices(COMMANDS, 4)
    with pytest.raises(ValueError, match="action index mode"):
        assign_action_indices(COMMANDS, 16, mode="alphabetical")
    with pytest.raises(ValueError, match="not a valid action here"):
        action_for({"valid_actions": ["north"], "action_indices": np.array([3])}, "south")
    assert action_for({"valid_actions": ["north", "up"], "action_indices": np.array([3, 9])}, "up") == 9


def test_env_config_checks(make_env):
    with pytest.raises(ValueError, match="action_index_mode"):
        make_env(action_index_mode="sorted")
    with pytest.raises(ValueError, match="max_valid_actions"):
        make_env(action_space_size=8, max_valid_actions=9)
