"""Prompt building for action scoring, with history truncation that never cuts the current state.

Upstream truncated the tokenised chat on the right, which cut the current observation and the assistant header when a
long history overflowed the budget. Here the oldest history turns are dropped first; if the system text, the current
observation and the action list alone exceed the budget, that is an error rather than a silently broken prompt.

``PROMPT_CONFIG`` is the one prompt-settings section (``policy.llm.prompt`` in PriorZero's config): the prior, the
trainer and the workers that keep histories all read it, so the prompts the prior scored are the prompts training
rebuilds.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from lzero_ext.llm.scoring import check_score_rule
from lzero_ext.llm.types import Turn

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are playing a text adventure game. Read the recent history and the current observation, "
    "then choose the best next action from the list of valid actions. Answer with the action only."
)


# The neutral placeholder that stands for the observation in the content-free prompt.
CONTENT_FREE_TEXT = "N/A"

PROMPT_CONFIG = dict(
    # (str) System message (or plain-text preamble) of the prompt.
    system_prompt=DEFAULT_SYSTEM_PROMPT,
    # (int) How many past turns the prompt shows at most (the collector, evaluator and replay buffer keep as many).
    history_turns=4,
    # (int) Token budget of the prompt; the oldest history turns are dropped first.
    max_prompt_tokens=1024,
    # (str) Candidate score: 'sum' (summed token log-probs), 'mean' (per token) or 'pmi' (summed log-prob minus its
    # log-prob after the same prompt with the observation and history replaced by "N/A"; see llm/scoring.py).
    score_rule="sum",
)
PROMPT_KEYS = tuple(PROMPT_CONFIG)


class PromptTooLongError(ValueError):
    """The observation and action list alone do not fit in the prompt budget."""


class PromptBuilder:
    """Render (history, observation, candidates) as the text the LLM scores candidate actions after.

    With a chat template the prompt is ``system`` + ``user`` messages followed by the assistant header, so a
    candidate scored right after it is the model's reply; without one it is plain text ending in ``Action: ``.
    """

    def __init__(self, tokenizer, max_prompt_tokens: int, history_turns: int, system_prompt: str = DEFAULT_SYSTEM_PROMPT):
        if max_prompt_tokens <= 0:
            raise ValueError(f"max_prompt_tokens must be positive, got {max_prompt_tokens}")
        if history_turns < 0:
            raise ValueError(f"history_turns must be >= 0, got {history_turns}")
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.history_turns = history_turns
        self.system_prompt = system_prompt
        self.uses_chat_template = bool(tokenizer.chat_template)
        # Token ids of the prompts the last build_batch returned: the scorer needs exactly these (see token_ids).
        self._last_ids: dict[str, list[int]] = {}

    @classmethod
    def from_config(cls, tokenizer, cfg: Mapping) -> "PromptBuilder":
        """Build from a config holding the ``PROMPT_CONFIG`` keys (``score_rule`` is checked, not used here)."""
        check_score_rule(cfg["score_rule"], "score_rule")
        return cls(tokenizer, cfg["max_prompt_tokens"], cfg["history_turns"], cfg["system_prompt"])

    def content_free_prompt(self, candidates: Sequence[str]) -> str:
        """The prompt without the state, for the 'pmi' rule: same template, system prompt and action list, no
        history, and ``CONTENT_FREE_TEXT`` in place of the observation.

        The action list stays: a model copies a listed action, which makes every token after an action's first
        nearly free, so a content-free prompt without the list favoured long actions as much as summed log-probs
        favour short ones (SmolLM2-135M: top-1 0.04 on walkthrough states, below uniform). With the list, the copy
        effect cancels and what is left is what the observation and history add.
        """
        if not candidates:
            raise ValueError("Cannot build a content-free prompt for an empty candidate list")
        return self._render([], CONTENT_FREE_TEXT, candidates)

    def build(self, history: Sequence[Turn], observation: str, candidates: Sequence[str]) -> str:
        """Return the prompt with as many of the last ``history_turns`` turns as fit in ``max_prompt_tokens``."""
        return self.build_batch([(history, observation, candidates)])[0]

    def build_batch(self, states: Sequence[tuple[Sequence[Turn], str, Sequence[str]]]) -> list[str]:
        """:meth:`build` for many ``(history, observation, candidates)`` states, the same prompts.

        Why batched: counting a prompt's tokens is most of the host's cost of building it, and one tokenizer call over
        all prompts (Rust's batch encode) costs about half of one call per prompt (``bench/prompt_speed.py``, 2-core
        VM, SmolLM2's tokenizer, 800-token prompts: 0.9 vs 1.6 ms per state). A prompt over budget is rendered again
        with one turn fewer, in the next round, together with the others still over budget.
        """
        turns, observations, candidate_lists = [], [], []
        for history, observation, candidates in states:
            if not candidates:
                raise ValueError("Cannot build a scoring prompt for an empty candidate list")
            turns.append(list(history[-self.history_turns:]) if self.history_turns > 0 else [])
            observations.append(observation)
            candidate_lists.append(candidates)
        prompts: list[str | None] = [None] * len(turns)
        ids_of: dict[str, list[int]] = {}
        dropped = [0] * len(turns)
        pending = list(range(len(turns)))
        while pending:
            rendered = [self._render(turns[i][dropped[i]:], observations[i], candidate_lists[i]) for i in pending]
            over = []
            for i, prompt, ids in zip(pending, rendered, self._token_ids_batch(rendered)):
                length = len(ids)
                if length <= self.max_prompt_tokens:
                    prompts[i], ids_of[prompt] = prompt, ids
                    if dropped[i]:
                        logger.debug("Prompt over budget: dropped the %d oldest of %d history turns", dropped[i],
                                     len(turns[i]))
                elif dropped[i] == len(turns[i]):
                    raise PromptTooLongError(
                        f"The prompt needs {length} tokens without any history (observation of "
                        f"{len(observations[i])} characters, {len(candidate_lists[i])} candidate actions), over "
                        f"max_prompt_tokens={self.max_prompt_tokens}; raise max_prompt_tokens or shorten the observation"
                    )
                else:
                    dropped[i] += 1
                    over.append(i)
            pending = over
        self._last_ids = ids_of
        return prompts

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``prompts`` as the scorer tokenises them (special tokens included), reusing those that the
        last :meth:`build_batch` computed to count them: the scorer then does not tokenise its prompts again."""
        known = self._last_ids  # one read: another thread's build_batch may replace it (its ids are as good)
        missing = list(dict.fromkeys(p for p in prompts if p not in known))
        fresh = dict(zip(missing, self._token_ids_batch(missing))) if missing else {}
        return [list(known[p]) if p in known else list(fresh[p]) for p in prompts]

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Token counts of ``prompts``; those of the last :meth:`build_batch` are not tokenised again."""
        known = self._last_ids
        return [len(known[p]) if p in known else self.count_tokens(p) for p in prompts]

    def count_tokens(self, prompt: str) -> int:
        return len(self._token_ids_batch([prompt])[0])

    def _token_ids_batch(self, prompts: Sequence[str]) -> list[list[int]]:
        """One tokenizer call over ``prompts`` (special tokens included, as :func:`tokenize_for_scoring` does)."""
        return [list(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]

    def _render(self, turns: Sequence[Turn], observation: str, candidates: Sequence[str]) -> str:
        user_text = self._user_text(turns, observation, candidates)
        if self.uses_chat_template:
            messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user_text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{self.system_prompt}\n\n{user_text}\n\nAction: "

    @staticmethod
    def _user_text(turns: Sequence[Turn], observation: str, candidates: Sequence[str]) -> str:
        parts = []
        if turns:
            lines = ["Recent history:"]
            for turn in turns:
                lines.append(f"Observation: {turn.observation.strip()}")
                if turn.action is not None:
                    lines.append(f"Action: {turn.action} (reward {turn.reward:g})")
            parts.append("\n".join(lines))
        parts.append(f"Current observation:\n{observation.strip()}")
        parts.append("Valid actions:\n" + "\n".join(f"- {candidate}" for candidate in candidates))
        return "\n\n".join(parts)
