"""A synthetic episode whose every field encodes its global step, so alignment can be checked anywhere."""
from __future__ import annotations

import numpy as np

from lzero_ext.buffer.game_segment import SegmentBuilder, StepDecision, StepObservation

ACTIONS = 4
OBS_LEN = 12


def observation(step: int, episode: int = 0) -> StepObservation:
    """Observation of global step ``step``: token 1 is the step + 1, text names the step."""
    tokens = np.zeros(OBS_LEN, dtype=np.int64)
    tokens[0], tokens[1], tokens[2] = 7, step + 1, episode + 1
    return StepObservation(
        tokens=tokens,
        attention_mask=(tokens != 0).astype(np.int64),
        action_mask=np.ones(ACTIONS, dtype=np.int8),
        raw_text=f"ep{episode} obs {step}",
        valid_actions=[f"ep{episode} s{step} act{i}" for i in range(ACTIONS)],
        timestep=step,
    )


def action_of(step: int) -> int:
    return (3 * step + 1) % ACTIONS


def decision(step: int, episode: int = 0, with_prior: bool = True) -> StepDecision:
    visits = np.full(ACTIONS, 0.1 / (ACTIONS - 1), dtype=np.float32)
    visits[action_of(step)] = 0.9
    return StepDecision(
        action=action_of(step),
        executed_action=f"ep{episode} s{step} act{action_of(step)}",
        visit_distribution=visits,
        root_value=float(step) / 10,
        prior_logprobs=np.log(np.full(ACTIONS, 1 / ACTIONS, dtype=np.float32)) if with_prior else None,
        prior_version=3 if with_prior else -1,
        old_prior_logprob=float(np.log(1 / ACTIONS)) if with_prior else float("nan"),
    )


def reward_of(step: int) -> float:
    return float(step % 3 == 0)


def play_episode(
    builder: SegmentBuilder, num_steps: int, episode: int = 0, done: bool = True, with_prior: bool = True,
    truncated: bool = False,
) -> list:
    """Feed ``num_steps`` steps into ``builder``; returns the segments it hands over (flushing if not done).
    ``truncated``: the episode ends on the step limit instead of terminating."""
    segments = builder.reset(observation(0, episode))
    for step in range(num_steps):
        is_last = done and step == num_steps - 1
        segments += builder.append(
            decision(step, episode, with_prior), reward_of(step), observation(step + 1, episode), is_last,
            truncated and is_last,
        )
    if not done:
        segments += builder.flush()
    return segments
