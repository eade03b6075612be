"""Game steps → Open-Reasoner-Zero's sample contract (prompt text, response text, scalar reward, extras).

ORZ's trainer consumes ``(prompt_text, extra_dict)`` items; the extras dict is the only per-sample channel that
reaches its generation and reward hooks untouched. PriorZero does not let ORZ sample: the *response* is the action
the search executed and the *reward* is computed by us (the advantage our RL loss uses), so the adapter puts both into
the extras for :mod:`lzero_ext.orz.hook` to hand back to ORZ. The prompt is rendered by the
same :class:`~lzero_ext.llm.prompt.PromptBuilder` the prior scores with, so ORZ trains on the prompts MCTS saw.

Pure and deterministic: no model, no ORZ import; only the prompt builder's tokenizer is used (to fit the budget).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lzero_ext.llm.prompt import PromptBuilder
from lzero_ext.llm.types import LLMSample

REWARD_SOURCES = ("advantage",)
# 'return' was accepted once but no caller ever had returns to pass (LLMSample carries none): every run with it failed.
REMOVED_REWARD_SOURCES = {"return": "reward_source='return' was removed: nothing supplied per-sample returns, so it "
                                    "always failed. Use 'advantage' (the n-step target minus the world model's value, "
                                    "the return with a baseline)"}

# Keys of the extras dict that carry our pre-collected response and reward into ORZ's hooks.
RESPONSE_KEY = "response"
REWARD_KEY = "reward"


@dataclass(frozen=True)
class OrzExtras:
    """Side data of one sample; ORZ passes it untouched to ``generate_vllm`` / ``custom_reward_fn``."""

    valid_actions: list[str]  # the candidates the search chose among, in the prior's order
    action_index: int  # index of the executed action in valid_actions
    visit_distribution: list[float]  # MCTS visit distribution over valid_actions, normalised to sum 1
    old_prior_logprob: float  # prior log-prob of the executed action at collection time (NaN if none)
    advantage: float  # the advantage our RL loss uses for this step
    weights_version: int | None  # LLM weights version of the prior at collection, when known
    group_id: int | None  # GRPO-style group of the sample, when set


@dataclass(frozen=True)
class OrzSample:
    """One ORZ training item: ``prompt`` followed by ``response`` earns ``reward`` (a sequence-level score)."""

    prompt: str
    response: str
    reward: float
    extras: OrzExtras

    def to_orz_item(self) -> tuple[str, dict[str, Any]]:
        """The ``(prompt_text, extra_dict)`` tuple ORZ's datasets yield; the dict also carries response and reward."""
        extra = asdict(self.extras)
        extra[RESPONSE_KEY] = self.response
        extra[REWARD_KEY] = self.reward
        return self.prompt, extra


def segments_to_orz_samples(
    samples: Sequence[LLMSample],
    prompt_builder: PromptBuilder,
    reward_source: str = "advantage",
    weights_versions: Sequence[int] | None = None,
    append_eos: bool = False,
) -> list[OrzSample]:
    """Turn sampled game steps into ORZ samples, one per step, in the input order.

    Args:
        samples: steps from ``PriorZeroGameBuffer.sample_llm_batch``.
        prompt_builder: the prior's prompt builder (same tokenizer, budget, history length and system prompt).
        reward_source: ``'advantage'`` (``LLMSample.advantage``, what our RL loss weights), the only source.
        weights_versions: one weights version of the prior at collection per sample, recorded in the extras when given.
        append_eos: end the response with the tokenizer's EOS text, as the prior does with ``append_eos=True``.
    """
    check_reward_source(reward_source, "reward_source")
    if len(samples) == 0:
        raise ValueError("segments_to_orz_samples got no samples; ORZ cannot train on an empty batch")
    _check_length("weights_versions", weights_versions, len(samples))
    eos_text = _eos_text(prompt_builder) if append_eos else ""
    converted = []
    for index, sample in enumerate(samples):
        visits = _checked_visits(index, sample)
        reward = float(sample.advantage)
        if not math.isfinite(reward):
            raise ValueError(f"LLMSample {index}: the {reward_source} used as reward is not finite ({reward})")
        extras = OrzExtras(
            valid_actions=list(sample.candidates),
            action_index=int(sample.action_index),
            visit_distribution=[float(v) for v in visits],
            old_prior_logprob=float(sample.old_prior_logprob),
            advantage=float(sample.advantage),
            weights_version=None if weights_versions is None else int(weights_versions[index]),
            group_id=sample.group_id,
        )
        converted.append(OrzSample(
            prompt=prompt_builder.build(sample.history, sample.observation, sample.candidates),
            response=sample.candidates[sample.action_index] + eos_text,
            reward=reward,
            extras=extras,
        ))
    return converted


def check_reward_source(value: str, where: str) -> None:
    """A clear error for removed or unknown reward sources."""
    if value in REMOVED_REWARD_SOURCES:
        raise ValueError(f"{where}: {REMOVED_REWARD_SOURCES[value]}")
    if value not in REWARD_SOURCES:
        raise ValueError(f"{where} must be one of {REWARD_SOURCES}, got {value!r}")


def _check_length(name: str, values: Sequence | None, expected: int) -> None:
    if values is not None and len(values) != expected:
        raise ValueError(f"{name} has {len(values)} entries for {expected} samples; give one per sample")


def _checked_visits(index: int, sample: LLMSample) -> np.ndarray:
    """The visit distribution normalised to sum 1, after the checks the built-in trainer also makes."""
    k = len(sample.candidates)
    if k == 0:
        raise ValueError(f"LLMSample {index} has an empty candidate list: there is no action text to train on")
    if not 0 <= sample.action_index < k:
        raise ValueError(f"LLMSample {index}: action_index {sample.action_index} not in [0, {k})")
    if not sample.candidates[sample.action_index].strip():
        raise ValueError(f"LLMSample {index}: the executed action is an empty string")
    visits = np.asarray(sample.visit_distribution, dtype=np.float64)
    if visits.shape != (k,):
        raise ValueError(f"LLMSample {index}: visit_distribution has shape {visits.shape}, expected ({k},)")
    if not np.isfinite(visits).all() or (visits < 0).any() or visits.sum() <= 0:
        raise ValueError(f"LLMSample {index}: visit_distribution must be finite, >= 0 and not all zero")
    return visits / visits.sum()


def _eos_text(prompt_builder: PromptBuilder) -> str:
    eos = prompt_builder.tokenizer.eos_token
    if not eos:
        raise ValueError("append_eos=True but the prompt builder's tokenizer has no eos_token")
    return eos
