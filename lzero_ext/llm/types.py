"""Typed records that cross the boundary between the LLM side and its callers (collector, learner, buffer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class Turn:
    """One past step of a game as the prompt shows it: what was seen, what was done, what it earned."""

    observation: str
    action: str | None
    reward: float


@dataclass
class PriorRequest:
    """Ask the prior for a distribution over ``candidates`` (the valid actions) in the current state."""

    history: list[Turn]
    observation: str
    candidates: list[str]


@dataclass
class PriorResult:
    """Log-probabilities over the request's candidates, in its order, and the weights version that made them."""

    logprobs: np.ndarray  # [K] float32, normalised over the candidates after the temperature
    version: int


@dataclass
class LLMSample:
    """One training example for the LLM: a state, the search's visit distribution and the executed action.

    ``old_prior_logprob`` is the prior's candidate-normalised log-prob of ``action_index`` at collection time (the
    PPO ratio's denominator). The action was drawn from the search's visit counts, not from the prior, so it is not a
    behaviour-policy probability: the ratio is a trust region around the old prior, not an importance weight.
    ``advantage`` is supplied by the caller (e.g. the world model's n-step target minus its value); ``group_id``
    groups samples for per-group advantage normalisation (the buffer sets it to the state: samples with the same
    observation text share it).
    """

    history: list[Turn]
    observation: str
    candidates: list[str]
    visit_distribution: np.ndarray  # [K] non-negative, normalised by the trainer
    action_index: int
    advantage: float
    old_prior_logprob: float
    group_id: int | None = None


class WeightsFollower(Protocol):
    """A prior that follows a trainer's weights: the trainer calls ``sync_from`` at attach time and after each step."""

    def sync_from(self, source: "WeightsSource") -> None:
        """Take ``source``'s current weights and version."""


class WeightsSource(Protocol):
    """What a prior reads from the trainer it follows (:class:`~lzero_ext.llm.trainer.LLMTrainer` is one).

    It lives here, not in ``trainer.py``, so the prior and the trainer depend on this module and not on each other.
    """

    model: torch.nn.Module  # shared with a same-device prior: a step changes its weights in place
    tokenizer: Any
    version: int  # optimiser steps taken (the weights version of every prior result)

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The full weights (LoRA merged in) for a prior that keeps its own copy."""

    def attach_prior(self, prior: WeightsFollower) -> None:
        """Keep ``prior`` in sync from now on."""
