"""Bad config values fail at start with the key's full path: wrong types (checked against the defaults) and ranges
of the collector and evaluator keys. (Unknown keys, env values, missing files and devices: tests/env, tests/llm,
tests/integration.)"""
from __future__ import annotations

import pytest

from lzero_ext.utils.config_types import check_value_types
from lzero_ext.worker.collector import PriorZeroCollector
from lzero_ext.worker.evaluator import PriorZeroEvaluator
from zoo.jericho.priorzero.priorzero_config import get_priorzero_config


@pytest.mark.parametrize("override, path, expected", [
    ({"policy": {"mcts": {"num_simulations": "50"}}}, "main_config.policy.mcts.num_simulations", "int"),
    ({"env": {"max_steps": 2.5}}, "main_config.env.max_steps", "int"),
    ({"env": {"collector_env_num": True}}, "main_config.env.collector_env_num", "int"),
    ({"policy": {"llm": {"train": "yes"}}}, "main_config.policy.llm.train", "bool"),
    ({"policy": {"learn": {"wm": {"learning_rate": "1e-3"}}}}, "main_config.policy.learn.wm.learning_rate", "number"),
    ({"policy": {"mcts": 3}}, "main_config.policy.mcts", "dict"),
])
def test_wrong_type_names_the_key_and_the_expected_type(override, path, expected):
    with pytest.raises(TypeError, match=rf"'{path}' must be {expected}"):
        get_priorzero_config(debug=True, overrides=override)


def test_compatible_values_pass():
    cfg, _ = get_priorzero_config(debug=True, overrides={"policy": {"learn": {"wm": {"learning_rate": 1}}},
                                                          "env": {"manager": {"step_timeout": 5.5}}})
    assert cfg.policy.learn.wm.learning_rate == 1 and cfg.env.manager.step_timeout == 5.5
    check_value_types({"a": None, "b": 1.0}, {"a": "anything", "b": None}, "x")  # None default / value: optional


@pytest.mark.parametrize("cls, cfg, key", [
    (PriorZeroCollector, dict(n_steps=0), "collector.n_steps"),
    (PriorZeroCollector, dict(max_dropped_episodes_in_a_row=0), "collector.max_dropped_episodes_in_a_row"),
    (PriorZeroEvaluator, dict(n_episode=0), "evaluator.n_episode"),
])
def test_out_of_range_worker_values_are_refused(cls, cfg, key):
    with pytest.raises(ValueError, match=rf"{key} must be >= 1, got 0"):
        cls(cfg)
