"""The config keys passed through to DI-engine, Ray and ORZ (env.manager, collect.ray, policy.llm.orz.exp) are
checked when the config is built, like every other key: an unknown one fails at start, naming the nearest."""
from __future__ import annotations

import pytest

from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config


@pytest.mark.parametrize("overrides, error, match", [
    ({"collect": {"ray": {"bogus": 1}}}, KeyError, r"main_config\.collect\.ray\.bogus'; did you mean"),
    ({"collect": {"ray": {"actor_num_cpu": 1.0}}}, KeyError, r"collect\.ray\.actor_num_cpus'"),
    ({"env": {"manager": {"step_timout": 30}}}, KeyError, r"main_config\.env\.manager\.step_timeout'"),
    ({"env": {"manager": {"type": "env_pool"}}}, ValueError, r"env\.manager\.type must be one of"),
    ({"env": {"manager": {"shared_memory": "no"}}}, TypeError, r"env\.manager\.shared_memory' must be bool"),
    ({"policy": {"llm": {"orz": {"exp": {"gamma": 0.99}}}}}, ValueError, r"orz\.exp\.gamma=0\.99 conflicts"),
    ({"policy": {"llm": {"orz": {"exp": {"generate_max_len": "64"}}}}}, TypeError, r"exp\.generate_max_len' must"),
])
def test_bad_pass_through_keys_fail_when_the_config_is_built(overrides, error, match):
    with pytest.raises(error, match=match):
        get_priorzero_debug_config(overrides=overrides)


def test_valid_pass_through_keys_are_kept_as_given():
    cfg, _ = get_priorzero_debug_config(overrides={
        "collect": {"ray": {"ray_address": "auto", "torch_threads": 2}},
        "env": {"manager": {"type": "subprocess", "step_timeout": 30}},
        "policy": {"llm": {"orz": {"exp": {"actor_learning_rate": 1e-6, "generate_max_len": 32}}}},
    })
    assert cfg.collect.ray == {"ray_address": "auto", "torch_threads": 2}
    assert cfg.env.manager.type == "subprocess" and cfg.env.manager.step_timeout == 30
    assert cfg.env.manager.shared_memory is False  # the preset's value is kept beside the override
    # exp names are open here (ORZ's BasePPOExpConfig is external); they are checked when ORZ is imported
    assert cfg.policy.llm.orz.exp.actor_learning_rate == 1e-6
