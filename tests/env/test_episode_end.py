"""How an episode ends: Gymnasium's terminated / truncated flags in the info, ``done`` True for both."""
from __future__ import annotations

from zoo.jericho.priorzero.envs.action_indices import action_for
from zoo.jericho.priorzero.games import DEFAULT_WALKTHROUGH


def test_step_limit_truncates_and_keeps_an_ordinary_last_observation(make_env):
    env = make_env(max_steps=2)
    obs = env.reset()
    first = env.step(action_for(obs, DEFAULT_WALKTHROUGH[0]))
    assert not first.done and first.info["terminated"] is False and first.info["truncated"] is False
    last = env.step(action_for(first.obs, DEFAULT_WALKTHROUGH[1]))
    assert last.done
    assert last.info["truncated"] is True and last.info["terminated"] is False
    # the game goes on: the final observation is rendered like any other state (the learner bootstraps from it)
    assert last.obs["valid_actions"] != [env._cfg.fallback_action]
    assert last.info["valid_actions_source"] != "episode_end"


def test_victory_terminates_even_on_the_last_allowed_step(make_env):
    env = make_env(max_steps=len(DEFAULT_WALKTHROUGH))
    obs = env.reset()
    for action in DEFAULT_WALKTHROUGH:
        timestep = env.step(action_for(obs, action))
        obs = timestep.obs
    assert timestep.done and timestep.info["victory"] is True
    assert timestep.info["terminated"] is True and timestep.info["truncated"] is False
    assert timestep.info["valid_actions_source"] == "episode_end"
