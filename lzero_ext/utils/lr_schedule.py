"""Learning-rate schedules shared by the world-model and LLM learners (factors for ``torch.optim.lr_scheduler.LambdaLR``).

A decay that ends with the run matters for short runs: with a constant rate the last updates move the policy as
much as the first, so the final evaluation lands wherever the last few updates left it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak rate at optimiser ``step``: linear warm-up, then constant / cosine / linear decay
    to ``min_lr_ratio`` at ``total_steps`` (and held there)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1 - min_lr_ratio) * progress


def check_schedule(schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float, where: str) -> None:
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"{where}.lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"{where}: need warmup_steps >= 0, total_steps >= 1 and 0 <= min_lr_ratio <= 1, got "
                         f"{warmup_steps}, {total_steps}, {min_lr_ratio}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], where: str
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """The checked schedule of a learner config (keys ``lr_schedule``, ``warmup_steps``, ``total_steps``,
    ``min_lr_ratio``) over ``optimizer``; ``where`` names the config in errors."""
    keys = (cfg["lr_schedule"], cfg["warmup_steps"], cfg["total_steps"], cfg["min_lr_ratio"])
    check_schedule(*keys, where)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, *keys))
