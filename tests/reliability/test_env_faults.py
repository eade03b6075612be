"""Env faults during collection and evaluation: the failed env is restarted, its episode dropped, the run goes on.

A fault is injected into env 0's first episode at step ``FAULT_STEP`` (an exception from the game, a hang past
``step_timeout``, or the worker process exiting); every observation of that doomed episode is tagged, so the test
can check that none of its steps reaches the replay buffer.
"""
from __future__ import annotations

import logging
import os
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ding.envs import BaseEnvManager, SyncSubprocessEnvManager

from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer
from lzero_ext.buffer.game_segment import StepDecision
from lzero_ext.worker.collector import PriorZeroCollector
from lzero_ext.worker.evaluator import PriorZeroEvaluator
from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

ACTIONS, MAX_STEPS, FAULT_STEP = 4, 6, 3
DOOMED_TAG = "[doomed episode]"
ENV_CFG = dict(max_steps=MAX_STEPS, action_space_size=ACTIONS, max_seq_len=32, generate_valid_actions=False,
               look_and_inventory=False)


class FaultyEnv(PriorZeroJerichoEnv):
    """The env whose first episode fails at ``FAULT_STEP``; ``marker`` (a file) remembers, across processes and
    restarts, that the fault already happened, so the restarted env is healthy (unless ``always``)."""

    def __init__(self, cfg: dict, fault: str, marker: str, always: bool = False) -> None:
        super().__init__(cfg)
        self._fault, self._marker, self._always = fault, Path(marker), always
        self._doomed = False

    def reset(self) -> dict:
        self._doomed = self._always or not self._marker.exists()
        return super().reset()

    def _make_obs(self) -> dict:
        obs = super()._make_obs()
        if self._doomed:
            obs["raw_obs_text"] = f"{DOOMED_TAG} {obs['raw_obs_text']}"
        return obs

    def step(self, action):
        if self._doomed and self._timestep + 1 == FAULT_STEP:
            self._marker.touch()
            if self._fault == "raise":
                raise RuntimeError("injected game crash")
            if self._fault == "hang":
                time.sleep(60)
            if self._fault == "exit":
                os._exit(3)
        return super().step(action)


class FirstActionPolicy:
    """Stands in for PriorZeroPolicy: always the first candidate, one-hot visits."""

    def __init__(self) -> None:
        self.resets: list = []

    def reset(self, env_ids=None) -> None:
        self.resets.append(env_ids)

    def forward(self, obs: dict, histories=None, **_: object) -> dict:
        visits = np.eye(ACTIONS, dtype=np.float32)[0]
        return {e: SimpleNamespace(decision=StepDecision(0, o["valid_actions"][0], visits, 0.0))
                for e, o in obs.items()}


def make_manager(kind: str, fault: str, marker: Path, always: bool = False, step_timeout: int = 2):
    cfgs = PriorZeroJerichoEnv.create_collector_env_cfg(dict(ENV_CFG, collector_env_num=2))
    factories = [partial(FaultyEnv, cfgs[0], fault, str(marker), always), partial(PriorZeroJerichoEnv, cfgs[1])]
    manager_cls = BaseEnvManager if kind == "base" else SyncSubprocessEnvManager
    manager_cfg = manager_cls.default_config()
    manager_cfg.step_timeout = step_timeout
    if kind == "subprocess":
        manager_cfg.shared_memory = False
    return manager_cls(factories, manager_cfg)


def close_quietly(manager) -> None:
    try:
        manager.close()
    except (ConnectionResetError, BrokenPipeError):  # DI-engine's subprocess close race (see tests/env)
        pass


EXPECTED_ERROR = {"raise": "injected game crash", "hang": "step_timeout", "exit": "died"}


@pytest.mark.parametrize("kind, fault", [("base", "raise"), ("base", "hang"), ("subprocess", "raise"),
                                         ("subprocess", "hang"), ("subprocess", "exit")])
def test_collection_survives_a_failed_env_and_drops_its_episode(kind, fault, tmp_path, caplog):
    manager = make_manager(kind, fault, tmp_path / "fault_happened")
    collector = PriorZeroCollector(dict(n_steps=24, segment_length=4, pad_length=2, history_length=2),
                                   env=manager, policy=FirstActionPolicy())
    buffer = PriorZeroGameBuffer(dict(action_space_size=ACTIONS, num_unroll_steps=2, td_steps=1))
    try:
        with caplog.at_level(logging.WARNING, logger="lzero_ext.worker.collector"):
            tic = time.monotonic()
            buffer.push_game_segments(collector.collect())
            elapsed = time.monotonic() - tic
            buffer.push_game_segments(collector.collect())  # the run goes on with the restarted env
    finally:
        close_quietly(manager)
    assert (tmp_path / "fault_happened").exists()  # the fault was injected
    stats = collector.last_stats
    assert collector.envstep >= 48
    assert collector.total_episodes >= 6  # env 0 finished episodes after its restart too (env 1 alone: 4)
    warnings = [r.getMessage() for r in caplog.records if "dropped its episode" in r.getMessage()]
    assert len(warnings) == 1 and "env 0" in warnings[0] and EXPECTED_ERROR[fault] in warnings[0]
    assert stats.dropped_episodes == 0  # the second collect had no fault
    segments = buffer._segments
    assert buffer.get_num_of_transitions() > 0
    texts = [t for s in segments for t in s.text.raw_texts + s.history_prefix.observations]
    assert texts and not any(DOOMED_TAG in t for t in texts)
    if fault == "hang":
        assert elapsed < 30  # the 60 s sleep was cut at the 2 s step timeout


def test_dropped_episode_is_counted_in_the_metrics(tmp_path):
    manager = make_manager("base", "raise", tmp_path / "fault_happened")
    collector = PriorZeroCollector(dict(n_steps=8, segment_length=4, pad_length=2, history_length=2),
                                   env=manager, policy=FirstActionPolicy())
    try:
        collector.collect()
    finally:
        close_quietly(manager)
    assert collector.last_stats.dropped_episodes == 1
    assert collector.last_stats.metrics()["collect/dropped_episodes"] == 1.0


def test_an_env_that_keeps_failing_stops_the_run_with_advice(tmp_path):
    manager = make_manager("base", "raise", tmp_path / "fault_happened", always=True)
    collector = PriorZeroCollector(dict(n_steps=200, segment_length=4, pad_length=2, history_length=2,
                                        max_dropped_episodes_in_a_row=2), env=manager, policy=FirstActionPolicy())
    try:
        with pytest.raises(RuntimeError, match=r"env 0 failed in 2 episodes in a row.*max_dropped_episodes"):
            collector.collect()
    finally:
        close_quietly(manager)


@pytest.mark.parametrize("kind", ["base", "subprocess"])
def test_evaluation_replays_an_episode_whose_env_failed(kind, tmp_path, caplog):
    manager = make_manager(kind, "raise", tmp_path / "fault_happened")
    evaluator = PriorZeroEvaluator(dict(n_episode=3, history_length=2), env=manager, policy=FirstActionPolicy())
    try:
        with caplog.at_level(logging.WARNING, logger="lzero_ext.worker.evaluator"):
            result = evaluator.run()
    finally:
        close_quietly(manager)
    assert result.dropped_episodes == 1
    assert len(result.episodes) == 3 and all(e.length == MAX_STEPS for e in result.episodes)
    assert result.metrics("evals/")["evals/dropped_episodes"] == 1.0
    assert any("evaluator env 0 failed" in r.getMessage() and "injected game crash" in r.getMessage()
               for r in caplog.records)
