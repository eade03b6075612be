"""Several envs in parallel through DI-engine's base and subprocess env managers."""
from __future__ import annotations

from functools import partial

import pytest
from ding.envs import BaseEnvManager, SyncSubprocessEnvManager
from ding.utils import ENV_REGISTRY

from lzero_ext.worker.env_recovery import step_envs
from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv


def test_registered_under_its_own_name():
    assert ENV_REGISTRY.get("priorzero_jericho") is PriorZeroJerichoEnv


@pytest.mark.parametrize("manager_cls", [BaseEnvManager, SyncSubprocessEnvManager])
def test_two_envs_step_through_an_env_manager(manager_cls, tiny_tokenizer_path):
    env_cfg = {"tokenizer_path": tiny_tokenizer_path, "object_extractor": "rules", "max_steps": 4,
               "collector_env_num": 2, "manager": {"shared_memory": False}}
    env_cfgs = PriorZeroJerichoEnv.create_collector_env_cfg(env_cfg)
    assert len(env_cfgs) == 2 and all(cfg["is_collect"] for cfg in env_cfgs)
    manager_cfg = manager_cls.default_config()
    if manager_cls is SyncSubprocessEnvManager:  # what env_manager type "subprocess" builds
        manager_cfg.shared_memory = False  # observations carry strings and lists
    manager = manager_cls([partial(PriorZeroJerichoEnv, cfg) for cfg in env_cfgs], manager_cfg)
    manager.seed([0, 1])
    manager.launch()
    try:
        episode_returns, executed = [], []
        for _ in range(12):
            obs = manager.ready_obs
            actions = {env_id: int(o["action_indices"][-1]) for env_id, o in obs.items()}
            # step_envs is how the collector and evaluator step a manager: it resets a finished env synchronously.
            # DI-engine's own SyncSubprocessEnvManager.step resets it in a background thread that reads the same
            # pipe as close() below; closing while that reset is in flight interleaves the two reads (CI saw
            # UnpicklingError, ConnectionResetError and EOFError from close()).
            timesteps, failures = step_envs(manager, actions)
            assert failures == {}
            for env_id, timestep in timesteps.items():
                executed.append(timestep.info["executed_action"])
                if timestep.done:
                    episode_returns.append(timestep.info["eval_episode_return"])
        assert len(episode_returns) >= 4  # both envs finished (max_steps=4) and were auto-reset
        assert "take shovel" in executed
    finally:
        manager.close()
