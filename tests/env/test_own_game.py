"""Our default game through the env: walkthrough, valid actions, observation contract, random play."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.jericho.priorzero.envs.action_indices import action_for, text_hash_index
from zoo.jericho.priorzero.games import DEFAULT_MAX_SCORE, DEFAULT_WALKTHROUGH

OBS_KEYS = {"observation", "attention_mask", "action_mask", "to_play", "timestep", "raw_obs_text", "valid_actions",
            "action_indices", "score"}


def test_walkthrough_wins_with_full_score_and_every_action_is_valid(make_env):
    env = make_env(max_steps=100)
    obs = env.reset()
    rewards = []
    for step, action in enumerate(DEFAULT_WALKTHROUGH):
        assert action in obs["valid_actions"], f"step {step}: {action!r} not in {obs['valid_actions']}"
        timestep = env.step(action_for(obs, action))
        assert timestep.info["executed_action"] == action
        rewards.append(float(timestep.reward[0]))
        obs = timestep.obs
        assert timestep.done == (step == len(DEFAULT_WALKTHROUGH) - 1)
    info = timestep.info
    assert info["victory"] is True
    assert info["score"] == info["max_score"] == DEFAULT_MAX_SCORE
    assert sum(rewards) == DEFAULT_MAX_SCORE
    assert sum(r > 0 for r in rewards) >= 5  # points come in several separate awards
    assert info["eval_episode_return"] == DEFAULT_MAX_SCORE
    assert info["moves"] == len(DEFAULT_WALKTHROUGH)
    assert "You have won" in info["raw_obs_text"]


def test_observation_contract(make_env):
    env = make_env(max_seq_len=16, action_space_size=2, action_index_mode="list")
    obs = env.reset()
    assert set(obs) == OBS_KEYS
    assert obs["observation"].shape == obs["attention_mask"].shape == (16,)
    assert obs["observation"].dtype == obs["attention_mask"].dtype == np.int64
    assert obs["action_mask"].dtype == np.int8 and obs["action_mask"].shape == (2,)
    # three valid actions at the start, cut to the first two in generation order
    assert obs["valid_actions"] == ["north", "east"]
    assert obs["action_mask"].tolist() == [1, 1] and obs["action_indices"].tolist() == [0, 1]
    assert obs["to_play"] == -1 and obs["timestep"] == 0 and obs["score"] == 0.0
    assert obs["attention_mask"].sum() == 16  # the opening text is longer than 16 tokens: truncated, no padding
    assert "Pebble Beach" in obs["raw_obs_text"]


def test_padding_and_valid_actions_in_text(make_env, tiny_tokenizer_path):
    from transformers import AutoTokenizer

    pad_id = AutoTokenizer.from_pretrained(tiny_tokenizer_path).pad_token_id
    env = make_env(max_seq_len=512, include_valid_actions_in_obs_text=True)
    obs = env.reset()
    length = int(obs["attention_mask"].sum())
    assert 0 < length < 512
    assert (obs["attention_mask"][:length] == 1).all() and (obs["attention_mask"][length:] == 0).all()
    assert (obs["observation"][length:] == pad_id).all()
    plain = make_env(max_seq_len=512).reset()
    assert int(plain["attention_mask"].sum()) < length  # the valid-action list adds tokens


def test_out_of_range_index_executes_fallback_and_string_actions_run_verbatim(make_env):
    env = make_env()
    obs = env.reset()
    timestep = env.step(int(np.flatnonzero(obs["action_mask"] == 0)[0]))
    assert timestep.info["executed_action"] == "look"
    assert "Pebble Beach" in timestep.info["raw_obs_text"]
    timestep = env.step("take shovel")
    assert timestep.info["executed_action"] == "take shovel"
    assert "drop shovel" in timestep.obs["valid_actions"]
    timestep = env.step(np.array([0]))  # DI-engine passes numpy arrays
    assert timestep.info["executed_action"] == timestep.info["executed_action"].strip() != ""


def test_max_steps_ends_the_episode(make_env):
    env = make_env(max_steps=3)
    env.reset()
    dones = [env.step("look").done for _ in range(3)]
    assert dones == [False, False, True]
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("look")
    assert env.reset()["timestep"] == 0


def test_random_agent_1000_steps(make_env):
    env = make_env(max_steps=40)
    env.seed(123)
    rng = np.random.default_rng(123)
    obs = env.reset()
    episodes = 0
    for _ in range(1000):
        legal = int(obs["action_mask"].sum())
        assert legal == len(obs["valid_actions"]) >= 1
        action = int(rng.integers(len(obs["action_mask"])))  # often an illegal index: exercises the fallback
        timestep = env.step(action)
        assert 0 <= timestep.info["score"] <= DEFAULT_MAX_SCORE
        obs = timestep.obs
        if timestep.done:
            episodes += 1
            assert timestep.info["eval_episode_return"] == timestep.info["score"]  # the game starts at 0
            obs = env.reset()
    stats = env.valid_action_generator.stats
    assert episodes >= 25
    assert stats.timeouts == 0 and stats.errors == 0
    assert stats.cache_hits > 0


def test_default_tokenizer_is_the_projects_tiny_model(make_env):
    from lzero_ext.llm.default_model import ensure_default_model
    from transformers import AutoTokenizer

    env = make_env(tokenizer_path=None, generate_valid_actions=False, max_seq_len=32)
    obs = env.reset()
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_default_model()))
    expected = tokenizer(obs["raw_obs_text"], truncation=True, max_length=32)["input_ids"]
    assert obs["observation"][: len(expected)].tolist() == expected


def test_observation_carries_location_and_inventory_without_changing_the_game():
    """'Taken.' alone hides where the player is; look/inventory are added from a restored copy of the state."""
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    env = PriorZeroJerichoEnv(dict(max_steps=10, max_seq_len=64))
    try:
        env.reset()
        timestep = env.step("take shovel")
        text = timestep.obs["raw_obs_text"]
        assert text.startswith("Taken.") and "Pebble Beach" in text and "shovel" in text.split("Pebble Beach")[-1]
        assert timestep.info["moves"] == 1, "look/inventory must not advance the game"
        plain = PriorZeroJerichoEnv(dict(max_steps=10, max_seq_len=64, look_and_inventory=False))
        plain.reset()
        assert plain.step("take shovel").obs["raw_obs_text"] == "Taken."
        plain.close()
    finally:
        env.close()


def test_score_in_obs_text_tells_apart_states_that_differ_only_by_awards(make_env):
    """Take lamp (+1), drop it: the game text repeats, the world model's tokens must not."""
    from zoo.jericho.priorzero.envs.jericho_env import load_tokenizer

    tokenizer = load_tokenizer(None)  # the env's default: the project's tiny LLM tokenizer
    env = make_env(max_steps=100, max_seq_len=512, score_in_obs_text=True, tokenizer_path=None)
    obs = env.reset()
    assert tokenizer.decode(obs["observation"][obs["attention_mask"] == 1]).startswith("Score: 0\n")
    for action in ["north", "west", "open cupboard"]:
        obs = env.step(action_for(obs, action)).obs
    before = obs["observation"].copy()
    obs = env.step(action_for(obs, "take lamp")).obs
    obs = env.step(action_for(obs, "drop lamp")).obs
    text = tokenizer.decode(obs["observation"][obs["attention_mask"] == 1])
    assert text.startswith("Score: 1\n") and obs["raw_obs_text"].startswith("Dropped.")
    assert not np.array_equal(before, obs["observation"])


def test_text_hash_gives_a_command_the_same_index_in_every_state(make_env):
    """The world model's action index must mean the same command wherever it is valid."""
    env = make_env(max_steps=100, action_space_size=64, max_valid_actions=20)
    obs = env.reset()
    seen: dict[str, set[int]] = {}
    for command in DEFAULT_WALKTHROUGH[:-1]:
        indices = obs["action_indices"].tolist()
        assert len(set(indices)) == len(indices)  # distinct within a state
        assert obs["action_mask"].sum() == len(indices) and all(obs["action_mask"][indices] == 1)
        for text, index in zip(obs["valid_actions"], indices):
            seen.setdefault(text, set()).add(index)
        obs = env.step(action_for(obs, command)).obs
    stable = [text for text, indices in seen.items() if indices == {text_hash_index(text, 64)}]
    # Only commands that lost a collision inside a state move; most keep their home index everywhere.
    assert len(stable) >= 0.8 * len(seen), seen
    assert sum(len(indices) > 1 for indices in seen.values()) <= 0.1 * len(seen)
