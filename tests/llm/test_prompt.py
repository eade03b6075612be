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


def test_build_batch_equals_one_at_a_time_truncation_with_one_tokenizer_call_per_round(tiny_tokenizer):
    """Mixed states under a budget that fits 2 turns: each prompt is what dropping its oldest turns one at a time until
    it fits gives (rendered and counted here by hand), and counting takes one tokenizer call per round of drops."""
    builder = PromptBuilder(tiny_tokenizer, 4096, 10)
    budget = builder.count_tokens(builder.build(_history(10)[-2:], OBSERVATION, CANDIDATES))
    tight = PromptBuilder(tiny_tokenizer, budget, 10)
    states = [(_history(n), f"{OBSERVATION} ({n})", CANDIDATES[: 1 + n % 3]) for n in (0, 1, 2, 5, 10, 3)]

    def one_at_a_time(history, observation, candidates):
        turns = history[-10:]
        for dropped in range(len(turns) + 1):
            prompt = tight._render(turns[dropped:], observation, candidates)  # noqa: SLF001
            if len(tiny_tokenizer(prompt)["input_ids"]) <= budget:
                return prompt
        raise AssertionError("no prompt fits")

    calls = []
    real_tokenizer = tight.tokenizer

    class CountingTokenizer:
        def __getattr__(self, name):
            return getattr(real_tokenizer, name)

        def __call__(self, texts, **kwargs):
            calls.append(len(texts))
            return real_tokenizer(texts, **kwargs)

    tight.tokenizer = CountingTokenizer()
    prompts = tight.build_batch(states)
    assert prompts == [one_at_a_time(*state) for state in states]
    assert calls[0] == len(states) and len(calls) == 1 + 10 - 2  # the 10-turn state needs 8 more rounds
    assert "go door 9" in prompts[4] and "go door 7" not in prompts[4]
    with pytest.raises(PromptTooLongError, match="max_prompt_tokens=20"):
        PromptBuilder(tiny_tokenizer, 20, 4).build_batch([([], OBSERVATION, CANDIDATES), states[0]])


def test_token_ids_reuse_the_last_batch_and_match_the_scorers_tokenisation(tiny_tokenizer):
    from lzero_ext.llm.scoring import tokenize_for_scoring

    builder = PromptBuilder(tiny_tokenizer, 512, 4)
    prompts = builder.build_batch([(_history(2), OBSERVATION, CANDIDATES), ([], OBSERVATION, CANDIDATES[:1])])
    other = builder.content_free_prompt(CANDIDATES)  # never built: tokenised on demand
    expected, _ = tokenize_for_scoring(tiny_tokenizer, prompts + [other], [CANDIDATES] * 3)
    builder.tokenizer = None  # the built prompts' ids must come from the last build_batch, not a new tokenizer call
    assert builder.token_ids(prompts) == expected[:2]
    builder.tokenizer = tiny_tokenizer
    assert builder.token_ids([prompts[1], other, prompts[0]]) == [expected[1], expected[2], expected[0]]
    given, _ = tokenize_for_scoring(tiny_tokenizer, prompts, [CANDIDATES] * 2, prompt_ids=expected[:2])
    assert given == expected[:2]
    with pytest.raises(ValueError, match="1 prompt id lists for 2 prompts"):
        tokenize_for_scoring(tiny_tokenizer, prompts, [CANDIDATES] * 2, prompt_ids=expected[:1])
