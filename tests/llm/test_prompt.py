"""Prompt building: chat template, history truncation from the oldest end, never cutting the current state."""
from __future__ import annotations

import copy

import pytest

from lzero_ext.llm.prompt import PromptBuilder, PromptTooLongError
from lzero_ext.llm.types import Turn

OBSERVATION = "Lamp Room. A great lens sits in a brass frame. A box of matches lies on the floor."
CANDIDATES = ["take matches", "go down", "examine lens"]


def _history(n: int) -> list[Turn]:
    return [Turn(f"Room number {i}. A long corridor stretches on and on with doors everywhere.", f"go door {i}", 0.0)
            for i in range(n)]


def test_uses_chat_template_and_contains_state(tiny_tokenizer):
    prompt = PromptBuilder(tiny_tokenizer, 512, 4).build(_history(2), OBSERVATION, CANDIDATES)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert OBSERVATION in prompt
    assert all(f"- {c}" in prompt for c in CANDIDATES)
    assert "go door 0" in prompt and "go door 1" in prompt


def test_shows_at_most_history_turns(tiny_tokenizer):
    prompt = PromptBuilder(tiny_tokenizer, 4096, 2).build(_history(5), OBSERVATION, CANDIDATES)
    assert "go door 2" not in prompt
    assert "go door 3" in prompt and "go door 4" in prompt


def test_truncation_drops_oldest_history_and_keeps_observation_and_actions(tiny_tokenizer):
    builder = PromptBuilder(tiny_tokenizer, 4096, 10)
    budget = builder.count_tokens(builder.build(_history(10)[-2:], OBSERVATION, CANDIDATES))  # room for 2 turns
    tight = PromptBuilder(tiny_tokenizer, budget, 10)
    prompt = tight.build(_history(10), OBSERVATION, CANDIDATES)
    assert tight.count_tokens(prompt) <= budget
    assert "go door 8" in prompt and "go door 9" in prompt and "go door 7" not in prompt
    assert OBSERVATION in prompt and all(f"- {c}" in prompt for c in CANDIDATES)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_observation_and_actions_over_budget_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(PromptTooLongError, match="max_prompt_tokens=20"):
        PromptBuilder(tiny_tokenizer, 20, 4).build(_history(3), OBSERVATION, CANDIDATES)


def test_plain_text_prompt_without_chat_template(tiny_tokenizer):
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    prompt = PromptBuilder(plain, 512, 4, system_prompt="Play well.").build([], OBSERVATION, CANDIDATES)
    assert prompt.startswith("Play well.") and prompt.endswith("Action: ")
    assert OBSERVATION in prompt


def test_empty_candidates_and_bad_settings_are_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="empty candidate list"):
        PromptBuilder(tiny_tokenizer, 512, 4).build([], OBSERVATION, [])
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        PromptBuilder(tiny_tokenizer, 0, 4)
