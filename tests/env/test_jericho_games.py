"""zork1 and detective through the env: Jericho's walkthrough reaches the max score, valid actions cover it.

Matching a walkthrough action against the valid actions is done in two honest steps:

1. textual: lower-case, collapse whitespace and expand Jericho's abbreviations (``n`` -> ``north``,
   ``x`` -> ``examine``) with ``jericho.util.unabbreviate``;
2. otherwise by outcome: Jericho keeps one action per distinct world change (e.g. ``take egg`` for the
   walkthrough's ``Get egg``), so a valid action that leads to the same world-state hash and score as the
   walkthrough action counts as containing it.

Walkthrough actions that change neither the world hash nor the score (``READ PAPER``, ``INVENTORY``) can never
be in Jericho's valid actions by construction; they are counted and reported, not matched.
"""
from __future__ import annotations

import importlib
import warnings

import pytest

CHECKED_STATES = 6


def _normalise(action: str) -> str:
    return importlib.import_module("jericho.util").unabbreviate(" ".join(action.lower().split()))


def _outcome(frotz, state, action: str) -> tuple[str, int]:
    frotz.set_state(state)
    frotz.step(action)
    return frotz.get_world_state_hash(), frotz.get_score()


def _walkthrough(path) -> tuple[list[str], object]:
    from jericho import FrotzEnv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frotz = FrotzEnv(str(path))
    return frotz.get_walkthrough(), frotz


@pytest.mark.parametrize("game", ["zork1.z5", "detective.z5"])
def test_walkthrough_reaches_max_score_and_rewards_sum_to_score(make_env, jericho_game, game):
    """The full walkthrough as string actions (valid-action generation off: it is tested below)."""
    path = jericho_game(game)
    walkthrough, frotz = _walkthrough(path)
    env = make_env(game_path=path, max_steps=len(walkthrough), generate_valid_actions=False)
    start_score = env.reset()["score"]
    rewards = []
    for action in walkthrough:
        timestep = env.step(action)
        rewards.append(float(timestep.reward[0]))
        if timestep.done:
            break
    info = timestep.info
    assert timestep.done and info["victory"], f"{game}: no victory after {len(rewards)} steps"
    assert len(rewards) == len(walkthrough)
    assert info["score"] == info["max_score"] == frotz.get_max_score()
    assert sum(rewards) == info["score"] - start_score == info["eval_episode_return"]
    assert info["moves"] > 0
    frotz.close()


@pytest.mark.parametrize("game", ["zork1.z5", "detective.z5"])
def test_valid_actions_at_first_states_contain_walkthrough_action(make_env, jericho_game, game):
    path = jericho_game(game)
    walkthrough, frotz = _walkthrough(path)
    frotz.reset()
    env = make_env(game_path=path, max_steps=CHECKED_STATES)
    obs = env.reset()
    matched, world_neutral = {"text": [], "outcome": []}, []
    for step, action in enumerate(walkthrough[:CHECKED_STATES]):
        state = frotz.get_state()
        before = (frotz.get_world_state_hash(), frotz.get_score())
        target = _outcome(frotz, state, action)
        valid = obs["valid_actions"]
        assert obs["action_mask"].sum() == len(valid) >= 1
        if target == before:
            world_neutral.append(action)
        elif _normalise(action) in {_normalise(a) for a in valid}:
            matched["text"].append(action)
        else:
            outcomes = {_outcome(frotz, state, a): a for a in valid}
            assert target in outcomes, f"{game} step {step}: {action!r} has no equivalent in {valid}"
            matched["outcome"].append(f"{action} ~ {outcomes[target]}")
        frotz.set_state(state)
        frotz.step(action)
        obs = env.step(action).obs
    print(f"{game}: matched {matched}; world-neutral (not matchable) {world_neutral}")
    assert len(matched["text"]) + len(matched["outcome"]) >= 3, (matched, world_neutral)
    assert env.valid_action_generator.stats.timeouts == 0
    frotz.close()


def test_state_key_partitions_states_as_the_world_hash_does(jericho_game) -> None:
    """Along zork1's walkthrough and back (a return to a place is a revisit): two states share a ``state_key`` exactly
    when they share Jericho's world hash, and a key is a function of the state (set_state gives it back)."""
    from zoo.jericho.priorzero.envs.game_backend import JerichoBackend

    backend = JerichoBackend(jericho_game("zork1.z5"), seed=None)
    try:
        backend.reset()
        moves = backend.walkthrough()[:10] + ["south", "north", "look", "inventory"]
        seen = []
        for action in moves:
            seen.append((backend.get_state(), backend.state_key(), backend.world_state_hash()))
            backend.step(action)
        keys = [key for _, key, _ in seen]
        hashes = [world for _, _, world in seen]
        assert len(set(keys)) > 5
        assert all((keys[i] == keys[j]) == (hashes[i] == hashes[j]) for i in range(len(seen)) for j in range(i))
        assert any(keys[i] == keys[j] for i in range(len(seen)) for j in range(i))  # look/inventory change nothing
        backend.set_state(seen[3][0])
        assert backend.state_key() == keys[3]
    finally:
        backend.close()
