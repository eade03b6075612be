"""Metrics sink: TensorBoard (tensorboardX) plus a JSON-lines copy that scripts and tests can read back.

Learners and workers return ``dict[str, float]`` under slash namespaces (``train/``, ``evals/``, ``perf/``,
``llm/``, ``wm/``); the entry writes them here as they are, so no metric is dropped by a hand-kept list.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricsLogger:
    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.log_dir))
        self._jsonl = open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Write scalar metrics at ``step`` (non-finite values are written too: they are what a user must see)."""
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in clean.items():
            self.writer.add_scalar(key, value, step)
        record = {"step": step, "time": time.time(), **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def close(self) -> None:
        self.writer.close()
        self._jsonl.close()


def read_metrics(log_dir: str | os.PathLike) -> list[dict]:
    """Read back every record written by :class:`MetricsLogger` in ``log_dir``."""
    path = Path(log_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
