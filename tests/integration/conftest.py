"""Tiny end-to-end configs: the real components on our default game, sized to run in seconds on a CPU."""
from __future__ import annotations

import pytest

from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

TINY = dict(
    env=dict(max_steps=8, collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1),
    policy=dict(mcts=dict(num_simulations=4), learn=dict(batch_size=4, llm_batch_size=4),
                collect=dict(collector=dict(n_steps=8, segment_length=10))),
    train=dict(max_iter=2, eval_freq=0, save_freq=1, wm_updates_per_iter=1, llm_updates_per_iter=1,
               llm_train_freq=1, min_buffer_transitions=1, export_llm=False),
)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        from lzero_ext.utils.config import deep_merge

        return get_priorzero_debug_config(exp_name=str(tmp_path / "run"), overrides=deep_merge(TINY, overrides))

    return make
