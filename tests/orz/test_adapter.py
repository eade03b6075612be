"""segments_to_orz_samples: every field, both reward sources, prompts identical to the prior's, bad input."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from lzero_ext.orz.adapter import OrzExtras, OrzSample, segments_to_orz_samples
from tests.orz.conftest import make_sample


def test_every_field_with_advantage_reward(samples, prompt_builder):
    converted = segments_to_orz_samples(samples, prompt_builder)
    assert len(converted) == len(samples)
    for sample, orz in zip(samples, converted):
        assert isinstance(orz, OrzSample)
        assert orz.prompt == prompt_builder.build(sample.history, sample.observation, sample.candidates)
        assert orz.response == sample.candidates[sample.action_index]
        assert orz.reward == pytest.approx(sample.advantage)
        visits = np.asarray(sample.visit_distribution, dtype=np.float64)
        assert orz.extras == OrzExtras(
            valid_actions=list(sample.candidates), action_index=sample.action_index,
            visit_distribution=pytest.approx(list(visits / visits.sum())),
            old_prior_logprob=pytest.approx(sample.old_prior_logprob), advantage=pytest.approx(sample.advantage),
            weights_version=None, group_id=sample.group_id,
        )
        assert sum(orz.extras.visit_distribution) == pytest.approx(1.0)


def test_weights_versions_are_recorded_in_the_extras(samples, prompt_builder):
    converted = segments_to_orz_samples(samples, prompt_builder, weights_versions=[7, 7, 8, 9])
    assert [o.extras.weights_version for o in converted] == [7, 7, 8, 9]
    assert [o.reward for o in converted] == pytest.approx([s.advantage for s in samples])


def test_prompt_keeps_only_the_last_history_turns_like_the_prior(tokenizer, prompt_builder):
    sample = make_sample(1, num_history=5)
    prompt = segments_to_orz_samples([sample], prompt_builder)[0].prompt
    assert prompt == prompt_builder.build(sample.history, sample.observation, sample.candidates)
    assert "Room 1-4." in prompt and "Room 1-3." in prompt and "Room 1-2." not in prompt  # history_turns=2
    assert prompt_builder.uses_chat_template and prompt.endswith("<|im_start|>assistant\n")  # the reply comes next


def test_orz_item_carries_prompt_response_reward_and_extras(samples, prompt_builder):
    orz = segments_to_orz_samples(samples[:1], prompt_builder)[0]
    prompt, extra = orz.to_orz_item()
    assert prompt == orz.prompt
    assert extra["response"] == orz.response and extra["reward"] == orz.reward
    assert {k: v for k, v in extra.items() if k not in ("response", "reward")} == dataclasses.asdict(orz.extras)


def test_append_eos_ends_the_response_with_the_eos_text(samples, prompt_builder, tokenizer):
    orz = segments_to_orz_samples(samples[:1], prompt_builder, append_eos=True)[0]
    assert orz.response == samples[0].candidates[samples[0].action_index] + tokenizer.eos_token


def test_deterministic_and_does_not_modify_the_input(samples, prompt_builder):
    before = copy.deepcopy(samples)
    first = segments_to_orz_samples(samples, prompt_builder)
    second = segments_to_orz_samples(samples, prompt_builder)
    assert first == second
    for old, new in zip(before, samples):
        np.testing.assert_array_equal(old.visit_distribution, new.visit_distribution)
        assert old.history == new.history and old.candidates == new.candidates


def _with(**changes):
    return dataclasses.replace(make_sample(0), **changes)


@pytest.mark.parametrize("batch, kwargs, match", [
    ([make_sample(0)], dict(reward_source="value"), "reward_source must be one of"),
    ([], {}, "no samples"),
    ([make_sample(0)], dict(reward_source="return"), "reward_source='return' was removed"),
    ([make_sample(0)], dict(weights_versions=[1, 2]), "weights_versions has 2 entries"),
    ([make_sample(0), _with(action_index=3)], {}, r"LLMSample 1: action_index 3 not in \[0, 3\)"),
    ([_with(action_index=-1)], {}, "action_index -1"),
    ([_with(candidates=[], action_index=0)], {}, "empty candidate list"),
    ([_with(visit_distribution=np.ones(2))], {}, r"shape \(2,\), expected \(3,\)"),
    ([_with(visit_distribution=np.array([1.0, -1.0, 1.0]))], {}, "finite, >= 0 and not all zero"),
    ([_with(visit_distribution=np.zeros(3))], {}, "not all zero"),
    ([_with(visit_distribution=np.array([1.0, np.nan, 1.0]))], {}, "finite"),
    ([_with(advantage=float("inf"))], {}, "advantage used as reward is not finite"),
    ([_with(candidates=["  ", "b", "c"], action_index=0)], {}, "executed action is an empty string"),
])
def test_bad_input_raises_a_specific_error(prompt_builder, batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segments_to_orz_samples(batch, prompt_builder, **kwargs)
