import importlib

import pytest
from ding.utils import (BUFFER_REGISTRY, ENV_REGISTRY, POLICY_REGISTRY, SERIAL_COLLECTOR_REGISTRY,
                        SERIAL_EVALUATOR_REGISTRY)

from zoo.jericho.priorzero.priorzero_config import create_config_for, get_priorzero_debug_config

REGISTRIES = dict(env=ENV_REGISTRY, policy=POLICY_REGISTRY, collector=SERIAL_COLLECTOR_REGISTRY,
                  evaluator=SERIAL_EVALUATOR_REGISTRY, replay_buffer=BUFFER_REGISTRY)


@pytest.mark.parametrize("section", sorted(REGISTRIES))
def test_each_create_config_entry_resolves_through_its_import_names(section):
    entry = create_config_for()[section]
    for module in entry.import_names:
        importlib.import_module(module)
    cls = REGISTRIES[section].get(entry.type)
    assert cls.__module__ in entry.import_names


def test_command_mode_policy_is_registered_for_ding_serial():
    importlib.import_module("lzero_ext.policy.priorzero_policy")
    command_cls = POLICY_REGISTRY.get("priorzero_command")
    assert issubclass(command_cls, POLICY_REGISTRY.get("priorzero"))
    assert hasattr(command_cls, "command_mode")


def test_unknown_config_key_names_the_nearest_valid_key():
    with pytest.raises(KeyError, match=r"num_simulation'.*num_simulations"):
        get_priorzero_debug_config(overrides={"policy": {"mcts": {"num_simulation": 3}}})


def test_learning_rate_schedules_span_the_run_unless_set():
    cfg, _ = get_priorzero_debug_config(overrides={"train": {"max_iter": 30, "wm_updates_per_iter": 4,
                                                             "llm_train_freq": 3}})
    assert cfg.policy.learn.wm.total_steps == 30 * 4
    assert cfg.policy.llm.trainer.total_steps == 10
    cfg, _ = get_priorzero_debug_config(overrides={"policy": {"learn": {"wm": {"total_steps": 7}}}})
    assert cfg.policy.learn.wm.total_steps == 7


def test_derived_key_that_contradicts_its_source_is_refused():
    with pytest.raises(ValueError, match="policy.model.action_space_size"):
        get_priorzero_debug_config(overrides={"policy": {"model": {"action_space_size": 99}}})


def test_config_keeps_components_consistent():
    cfg, _ = get_priorzero_debug_config()
    assert cfg.policy.model.action_space_size == cfg.env.action_space_size
    assert cfg.policy.model.max_seq_len == cfg.env.max_seq_len
    assert cfg.policy.model.num_simulations == cfg.policy.mcts.num_simulations
    assert cfg.policy.collect.collector.pad_length == (cfg.policy.other.replay_buffer.num_unroll_steps
                                                        + cfg.policy.other.replay_buffer.td_steps)
    for key in ("model_path", "temperature", "append_eos"):
        assert cfg.policy.llm.trainer[key] == cfg.policy.llm.prior[key]
