"""When each phase of the hybrid loop runs: collection, world-model updates, LLM updates, evaluation, checkpoints.

One iteration = collect ``collector.n_steps`` env steps (unless the phase skips collection), then the learners that
are due. ``train.mode`` picks how the two learners share iterations:

* ``parallel`` (default): every iteration collects; the world model trains every ``wm_train_freq`` iterations
  (``wm_updates_per_iter`` steps), the LLM every ``llm_train_freq`` iterations (``llm_updates_per_iter`` steps).
* ``sequential``: cycles of a world-model phase of ``wm_phase_iters`` iterations (collect + world-model updates),
  then an LLM phase of ``llm_phase_updates`` LLM updates on the buffer, ``llm_updates_per_iter`` per iteration
  (collecting with the current prior only if ``llm_phase_collect``).
* ``alternating``: phases of ``alternate_every`` iterations, world model first, then LLM, and so on; the LLM phase
  collects with the current prior unless ``llm_phase_collect`` is False.

In ``sequential`` and ``alternating`` the phase decides which learner trains (the ``*_train_freq`` keys are for
``parallel`` only). :meth:`TrainSchedule.plan` answers all of it for one iteration, as a pure function.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from easydict import EasyDict

from lzero_ext.utils.config import merge_strict


MODES = ("parallel", "sequential", "alternating")
# Numeric codes of the phases, logged as ``schedule/phase`` (metrics are floats).
PHASE_CODES = {"parallel": 0, "wm": 1, "llm": 2}


@dataclass(frozen=True)
class IterationPlan:
    """What one iteration does."""

    phase: str  # 'parallel', 'wm' or 'llm'
    collect: bool
    wm_updates: int  # world-model gradient steps this iteration (0 = none)
    llm_updates: int  # LLM updates this iteration (0 = none)

    @property
    def train_world_model(self) -> bool:
        return self.wm_updates > 0

    @property
    def train_llm(self) -> bool:
        return self.llm_updates > 0


@dataclass
class TrainSchedule:
    """Iteration-based schedule of the hybrid loop (see :attr:`config`)."""

    config = dict(
        # (int) Iterations to run (each: collect, then the due learners); the run stops after this many.
        max_iter=1000,
        # (str) How the learners share iterations: 'parallel', 'sequential' or 'alternating' (module docstring).
        mode='parallel',
        # (int) sequential: iterations of each world-model phase.
        wm_phase_iters=10,
        # (int) sequential: LLM updates of each LLM phase (llm_updates_per_iter per iteration).
        llm_phase_updates=10,
        # (int) alternating: iterations per phase.
        alternate_every=5,
        # (bool) sequential / alternating: keep collecting (with the current prior) during LLM phases.
        llm_phase_collect=True,
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
        if self.cfg.mode not in MODES:
            raise ValueError(f"train.mode must be one of {MODES}, got {self.cfg.mode!r}")
        for key in ("max_iter", "wm_train_freq", "llm_train_freq", "keep_checkpoints", "max_consecutive_skipped_updates",
                    "wm_phase_iters", "llm_phase_updates", "alternate_every"):
            if self.cfg[key] < 1:
                raise ValueError(f"train.{key} must be >= 1, got {self.cfg[key]}")
        for key in ("wm_updates_per_iter", "llm_updates_per_iter", "eval_freq", "save_freq", "min_buffer_transitions"):
            if self.cfg[key] < 0:
                raise ValueError(f"train.{key} must be >= 0, got {self.cfg[key]}")

        if self.cfg.mode != "parallel":
            for key in ("wm_updates_per_iter", "llm_updates_per_iter"):
                if self.cfg[key] < 1:
                    raise ValueError(f"train.mode={self.cfg.mode!r} alternates between the learners and needs "
                                     f"train.{key} >= 1, got {self.cfg[key]}")

    @property
    def uses_phases(self) -> bool:
        return self.cfg.mode != "parallel"

    def plan(self, iteration: int) -> IterationPlan:
        """Phase, collection and update counts of iteration ``iteration`` (0-based)."""
        c = self.cfg
        if c.mode == "parallel":
            return IterationPlan(
                phase="parallel", collect=True,
                wm_updates=c.wm_updates_per_iter if iteration % c.wm_train_freq == 0 else 0,
                llm_updates=c.llm_updates_per_iter if iteration % c.llm_train_freq == 0 else 0,
            )
        if c.mode == "sequential":
            llm_iters = math.ceil(c.llm_phase_updates / c.llm_updates_per_iter)
            position = iteration % (c.wm_phase_iters + llm_iters)
            if position < c.wm_phase_iters:
                return self._wm_phase()
            done = (position - c.wm_phase_iters) * c.llm_updates_per_iter  # LLM updates earlier in this phase
            return self._llm_phase(min(c.llm_updates_per_iter, c.llm_phase_updates - done))
        # alternating
        if (iteration // c.alternate_every) % 2 == 0:
            return self._wm_phase()
        return self._llm_phase(c.llm_updates_per_iter)

    def _wm_phase(self) -> IterationPlan:
        return IterationPlan(phase="wm", collect=True, wm_updates=self.cfg.wm_updates_per_iter, llm_updates=0)

    def _llm_phase(self, updates: int) -> IterationPlan:
        return IterationPlan(phase="llm", collect=bool(self.cfg.llm_phase_collect), wm_updates=0, llm_updates=updates)

    def total_updates(self) -> tuple[int, int]:
        """(world-model, LLM) updates over the whole run, so learning-rate schedules can end with it."""
        wm = llm = 0
        for iteration in range(self.cfg.max_iter):
            plan = self.plan(iteration)
            wm, llm = wm + plan.wm_updates, llm + plan.llm_updates
        return wm, llm

    def train_world_model(self, iteration: int) -> bool:
        return self.plan(iteration).train_world_model

    def train_llm(self, iteration: int) -> bool:
        return self.plan(iteration).train_llm

    def evaluate(self, iteration: int) -> bool:
        """Before iteration ``iteration`` (0 included, so the untrained policy is measured)."""
        return self.cfg.eval_freq > 0 and iteration % self.cfg.eval_freq == 0

    def save(self, iteration: int) -> bool:
        """After iteration ``iteration`` (counted from 1)."""
        return self.cfg.save_freq > 0 and iteration % self.cfg.save_freq == 0
