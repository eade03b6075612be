"""One prompt-settings section (policy.llm.prompt): the trainer rebuilds exactly the prompts the prior scored."""
from __future__ import annotations

import pytest

from lzero_ext.entry.hybrid_loop import HybridTrainer
from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

HISTORY_TURNS = 8  # more than the replay buffer's own default (5), which the trainer used to build prompts from


def test_trainer_prompts_equal_the_prior_prompts_with_long_histories(tiny_config):
    cfg, create_cfg = tiny_config(
        env=dict(max_steps=14, collector_env_num=1),
        policy=dict(llm=dict(prompt=dict(history_turns=HISTORY_TURNS, max_prompt_tokens=4096)),
                    collect=dict(collector=dict(n_steps=14, segment_length=14))),
    )
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        policy = trainer.policy
        scored: dict[tuple[str, tuple[str, ...]], set[str]] = {}
        builder = policy.llm_prior.prompt_builder
        original = builder.build_batch

        def recording_build_batch(states):
            prompts = original(states)
            for (_, observation, candidates), prompt in zip(states, prompts):
                scored.setdefault((observation, tuple(candidates)), set()).add(prompt)
            return prompts

        builder.build_batch = recording_build_batch
        trainer.buffer.push_game_segments(trainer.collector.collect(train_iter=0))
        samples = trainer.buffer.sample_llm_batch(32)
        llm_trainer = policy._llm_trainer
        long_histories = 0
        for sample in samples:
            prompt = llm_trainer.prompt_builder.build(sample.history, sample.observation, sample.candidates)
            assert prompt in scored[(sample.observation, tuple(sample.candidates))]
            long_histories += len(sample.history) > 5
        assert long_histories > 0, "no sample had a history longer than the old buffer default"
    finally:
        trainer.close()


def test_prompt_settings_have_one_home():
    cfg, _ = get_priorzero_debug_config(overrides=dict(policy=dict(llm=dict(prompt=dict(history_turns=3)))))
    for section in (cfg.policy.other.replay_buffer, cfg.policy.collect.collector, cfg.policy.eval.evaluator):
        assert section.history_length == 3
    assert "history_turns" not in cfg.policy.llm.prior and "score_rule" not in cfg.policy.llm.trainer
    with pytest.raises(KeyError, match="policy.llm.prior"):
        get_priorzero_debug_config(overrides=dict(policy=dict(llm=dict(prior=dict(history_turns=3)))))
    with pytest.raises(ValueError, match="replay_buffer.history_length"):
        get_priorzero_debug_config(overrides=dict(policy=dict(other=dict(replay_buffer=dict(history_length=2)))))
