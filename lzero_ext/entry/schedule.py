"""When each phase of the hybrid loop runs: evaluation, world-model updates, LLM updates, checkpoints.

One iteration = collect ``collector.n_steps`` env steps, then the learners that are due. Frequencies count
iterations; an update count of 0 switches that learner off.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from easydict import EasyDict

from lzero_ext.utils.config import merge_strict


@dataclass
class TrainSchedule:
    """Iteration-based schedule of the hybrid loop (see :attr:`config`)."""

    config = dict(
        # (int) Iterations to run (each: collect, then the due learners); the run stops after this many.
        max_iter=1000,
        # (int) Train the world model every this many iterations.
        wm_train_freq=1,
        # (int) Train the LLM every this many iterations.
        llm_train_freq=5,
        # (int) World-model gradient steps per world-model phase (sets the replay ratio).
        wm_updates_per_iter=8,
        # (int) LLM gradient steps per LLM phase.
        llm_updates_per_iter=1,
        # (int) Minimum transitions in the buffer before any learner runs.
        min_buffer_transitions=16,
        # (int) Evaluate every this many iterations (and at the end); 0 = only at the end.
        eval_freq=20,
        # (int) Checkpoint every this many iterations (and at the end / on SIGINT or SIGTERM).
        save_freq=20,
        # (int) Checkpoints kept on disk (older ones are deleted).
        keep_checkpoints=3,
        # (bool) Store the replay buffer in checkpoints; without it a resumed run refills the buffer first.
        save_buffer=True,
        # (bool) Also export the LLM as a Hugging Face directory (LoRA merged) with each checkpoint.
        export_llm=True,
        # (int) Abort with a clear error after this many world-model updates in a row were skipped for a non-finite
        # loss or gradient (single skips are logged and counted: wm/skipped_updates).
        max_consecutive_skipped_updates=20,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: dict | None = None) -> None:
        self.cfg = merge_strict(self.default_config(), cfg, where="train")
        for key in ("max_iter", "wm_train_freq", "llm_train_freq", "keep_checkpoints", "max_consecutive_skipped_updates"):
            if self.cfg[key] < 1:
                raise ValueError(f"train.{key} must be >= 1, got {self.cfg[key]}")
        for key in ("wm_updates_per_iter", "llm_updates_per_iter", "eval_freq", "save_freq", "min_buffer_transitions"):
            if self.cfg[key] < 0:
                raise ValueError(f"train.{key} must be >= 0, got {self.cfg[key]}")

    def train_world_model(self, iteration: int) -> bool:
        return self.cfg.wm_updates_per_iter > 0 and iteration % self.cfg.wm_train_freq == 0

    def train_llm(self, iteration: int) -> bool:
        return self.cfg.llm_updates_per_iter > 0 and iteration % self.cfg.llm_train_freq == 0

    def evaluate(self, iteration: int) -> bool:
        """Before iteration ``iteration`` (0 included, so the untrained policy is measured)."""
        return self.cfg.eval_freq > 0 and iteration % self.cfg.eval_freq == 0

    def save(self, iteration: int) -> bool:
        """After iteration ``iteration`` (counted from 1)."""
        return self.cfg.save_freq > 0 and iteration % self.cfg.save_freq == 0
