"""The LLM update interface the training loop calls, and the built-in update through :class:`LLMTrainer`.

:class:`LLMUpdate` is what every backend offers (the built-in trainer here, ORZ's in :mod:`lzero_ext.orz.hook`);
the default path needs nothing beyond this package.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.types import LLMSample, WeightsFollower

# How to go on from a run whose LLM state cannot be resumed (weights held elsewhere, e.g. ORZ's actors).
RESUME_FROM_EXPORT_HINT = (
    "Export the trained LLM (PriorZeroPolicy.export_llm) and start a new run with policy.llm.trainer.model_path and "
    "policy.llm.prior.model_path set to the export"
)


class LLMUpdate(Protocol):
    """What the training loop calls for an LLM update, whichever backend runs it."""

    backend: str  # 'builtin' or 'orz'
    version: int  # weights version (optimiser / PPO steps applied so far)

    def train(self, samples: Sequence[LLMSample]) -> dict[str, float]: ...

    def attach_prior(self, prior: WeightsFollower) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...


class BuiltinLLMUpdate:
    """The built-in trainer behind the :class:`LLMUpdate` interface (``trainer`` stays reachable for checkpoints)."""

    backend = "builtin"

    def __init__(self, trainer: LLMTrainer, fallback: bool = False) -> None:
        self.trainer = trainer
        self.fallback = fallback

    @property
    def version(self) -> int:
        return self.trainer.version

    def train(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        metrics = self.trainer.train_step(samples)
        metrics["llm/backend_orz"] = 0.0
        metrics["llm/backend_fallback"] = float(self.fallback)
        return metrics

    def load_state_dict(self, state: Mapping) -> None:
        if "model" not in state:
            raise ValueError("this checkpoint's LLM state comes from the ORZ trainer (counters only, no weights); "
                             "the built-in LLMTrainer cannot resume from it. " + RESUME_FROM_EXPORT_HINT + ".")
        self.trainer.load_state_dict(state)

    def attach_prior(self, prior: WeightsFollower) -> None:
        self.trainer.attach_prior(prior)

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def export_hf(self, out_dir: str | os.PathLike) -> Path:
        return self.trainer.export_hf(out_dir)
