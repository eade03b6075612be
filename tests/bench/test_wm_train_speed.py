"""bench/wm_train_speed.py end to end on the CPU at debug sizes: a table row per part, with positive times."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.bench.test_learning_report import SCRIPT

PARTS = ("sample, n-step targets only (CPU)", "sample with target-model bootstrap values",
         "train_step on a sampled batch", "whole update (sample with values + train_step)")


def test_breakdown_times_every_part_of_an_update():
    result = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "wm_train_speed.py"), "--quick", "--updates", "2", "--warmup", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Sizes: batch 16, 5 unroll steps" in result.stdout  # the debug preset's learner, as the main job builds it
    for part in PARTS:
        row = re.search(rf"^\| {re.escape(part)} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", result.stdout, re.M)
        assert row is not None, f"no row for {part!r} in:\n{result.stdout}"
        median, fastest, per_second = map(float, row.groups())
        assert 0 < fastest <= median and per_second > 0
