"""collect/return_last100 (the last-100 training returns) survives a resume instead of restarting empty."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lzero_ext.entry.hybrid_loop import HybridTrainer
from lzero_ext.utils.metrics import read_metrics



def _collect_only(tiny_config, max_iter: int):
    """Collection only (the learners never start): the return window is under test here, not the weights."""
    return tiny_config(env=dict(max_steps=4), train=dict(max_iter=max_iter, min_buffer_transitions=10 ** 9))


def _logged_windows(trainer: HybridTrainer) -> list[float]:
    return [r["collect/return_last100"] for r in read_metrics(trainer.exp_dir / "log") if "collect/return_last100" in r]


def test_return_window_is_saved_and_continues_after_resume(tiny_config):
    cfg, create_cfg = _collect_only(tiny_config, 2)
    first = HybridTrainer(cfg, create_cfg)
    try:
        first.run()
        saved = list(first._recent_returns)
        assert len(saved) >= 2, "the test needs finished training episodes before the checkpoint"
        assert first.state_dict()["recent_returns"] == saved
    finally:
        first.close()

    cfg2, create_cfg2 = _collect_only(tiny_config, 3)
    second = HybridTrainer(cfg2, create_cfg2, resume="auto")
    try:
        assert list(second._recent_returns) == saved
        episodes_before = second.collector.total_episodes
        second.run()
        new_returns = list(second._recent_returns)[len(saved):]
        assert second.collector.total_episodes > episodes_before and new_returns
        assert list(second._recent_returns)[:len(saved)] == saved  # the window continued: old returns kept
        # the first value logged after the resume averages the saved returns and the new ones
        assert _logged_windows(second)[-1] == pytest.approx(float(np.mean(saved + new_returns)))
    finally:
        second.close()


def test_checkpoint_without_the_window_still_loads_and_says_so(tiny_config, caplog):
    cfg, create_cfg = _collect_only(tiny_config, 1)
    first = HybridTrainer(cfg, create_cfg)
    try:
        first.run()
    finally:
        first.close()
    path = first.checkpoints.list()[-1]
    payload = torch.load(path, map_location="cpu", weights_only=False)
    del payload["state"]["recent_returns"]  # as written before the window was checkpointed
    torch.save(payload, path)

    with caplog.at_level(logging.WARNING, logger="lzero_ext.entry.hybrid_loop"):
        second = HybridTrainer(*_collect_only(tiny_config, 2), resume=str(path))
    try:
        assert second.iteration == 1 and len(second._recent_returns) == 0
        assert "predates the saved training-return window" in caplog.text
    finally:
        second.close()

