"""Walkthrough states of a real game: what the prior sees, gold by world-state hash, cached by a content key."""
from __future__ import annotations

import json

import pytest

from zoo.jericho.priorzero.walkthrough_states import cache_file, load_walkthrough_states


@pytest.fixture
def zork1_states(jericho_game, tmp_path):
    path = jericho_game("zork1.z5")
    return path, tmp_path, load_walkthrough_states(path, max_states=3, cache_dir=tmp_path)


def test_states_follow_the_walkthrough_with_hash_gold(zork1_states) -> None:
    _, _, states = zork1_states
    assert len(states) == 3
    first = states[0]
    assert first.game == "zork1" and first.step == 0 and first.history == ()
    assert "West of House" in first.observation
    # zork1's walkthrough opens with "N"; its gold is the valid action "north" (same world hash, different text).
    assert [first.candidates[i] for i in first.gold] == ["north"]
    for state in states:
        assert 2 <= len(state.candidates) <= 20  # the full preset's cap
        assert 0 < len(state.gold) < len(state.candidates)
        assert len(state.history) == state.step  # every earlier turn, oldest first
    second = states[1]
    assert second.history[0].observation == first.observation and second.history[0].action.lower() == "n"


def test_cache_is_reused_and_keyed_by_size(zork1_states) -> None:
    path, cache_dir, states = zork1_states
    target = cache_file(path, 3, cache_dir)
    assert target.is_file()
    record = json.loads(target.read_text())
    record["states"][0]["gold"] = [0]  # a tampered cache proves the second load reads the file, not the game
    target.write_text(json.dumps(record))
    assert load_walkthrough_states(path, max_states=3, cache_dir=cache_dir)[0].gold == (0,)
    assert cache_file(path, 4, cache_dir) != target


def test_a_cached_build_of_another_size_serves_as_a_prefix(zork1_states) -> None:
    """A request for 2 states is answered by the 3-state build (its first 2); a request for 10 by the largest build
    there is; a file of the same game built with other env settings is never used."""
    from zoo.jericho.priorzero.walkthrough_states import ENV_SETTINGS, load_cached_prefix

    path, cache_dir, states = zork1_states
    assert load_cached_prefix(path, 2, cache_dir) == states[:2]
    assert load_cached_prefix(path, 10, cache_dir) == states
    other = cache_file(path, 50, cache_dir, settings={**ENV_SETTINGS, "max_valid_actions": 5})
    record = json.loads(cache_file(path, 3, cache_dir).read_text())
    other.write_text(json.dumps({**record, "max_states": 50, "states": record["states"] * 3}))
    assert load_cached_prefix(path, 10, cache_dir) == states  # the 9-state file has other settings
    cache_file(path, 3, cache_dir).unlink()
    assert load_cached_prefix(path, 10, cache_dir) is None


def test_a_build_stopped_by_its_time_limit_is_cached_as_the_build_of_what_it_found(jericho_game, tmp_path) -> None:
    path = jericho_game("zork1.z5")
    assert load_walkthrough_states(path, max_states=3, cache_dir=tmp_path, max_seconds=0.0) == []
    assert cache_file(path, 0, tmp_path).is_file() and not cache_file(path, 3, tmp_path).is_file()
    assert json.loads(cache_file(path, 0, tmp_path).read_text())["max_states"] == 0


def test_a_damaged_cache_file_is_ignored_not_fatal(zork1_states) -> None:
    path, cache_dir, states = zork1_states
    (cache_dir / "zork1-0000000000000000.json").write_text("{not json")
    assert load_walkthrough_states(path, max_states=2, cache_dir=cache_dir) == states[:2]
