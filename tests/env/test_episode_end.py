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


class _FirstCandidatePolicy:
    """Stands in for PriorZeroPolicy in the collector: the first candidate, one-hot visits."""

    def reset(self, env_ids=None) -> None:
        pass

    def forward(self, obs: dict, histories=None, **_: object) -> dict:
        from types import SimpleNamespace

        import numpy as np

        from lzero_ext.buffer.game_segment import StepDecision

        return {e: SimpleNamespace(decision=StepDecision(int(o["action_indices"][0]), o["valid_actions"][0],
                                                         np.eye(4, dtype=np.float32)[int(o["action_indices"][0])],
                                                         0.0))
                for e, o in obs.items()}


def test_collector_stores_step_limit_endings_as_truncated(tiny_tokenizer_path):
    from functools import partial

    from ding.envs import BaseEnvManager

    from lzero_ext.worker.collector import PriorZeroCollector
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    cfg = dict(max_steps=3, action_space_size=4, max_seq_len=16, generate_valid_actions=False,
               look_and_inventory=False, action_index_mode="list", tokenizer_path=tiny_tokenizer_path)
    manager = BaseEnvManager([partial(PriorZeroJerichoEnv, cfg)], BaseEnvManager.default_config())
    collector = PriorZeroCollector(dict(n_steps=6, segment_length=2, pad_length=2, history_length=1),
                                   env=manager, policy=_FirstCandidatePolicy())
    try:
        segments = collector.collect()
    finally:
        manager.close()
    assert collector.total_episodes == 2
    ends = [(s.num_own_steps, s.ends_episode, s.truncated, s.terminal) for s in segments]
    assert ends == [(2, True, True, False), (1, True, True, False)] * 2
