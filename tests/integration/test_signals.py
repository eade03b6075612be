"""Crash safety of the main job: SIGINT writes a final checkpoint and exits cleanly; after SIGKILL, --resume
continues from the newest complete checkpoint with its counters."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.integration.conftest import TINY

REPO_ROOT = Path(__file__).resolve().parents[2]


def _start(exp_dir: Path, max_iter: int, resume: bool = False) -> subprocess.Popen:
    overrides = json.loads(json.dumps(TINY))
    overrides["train"]["max_iter"] = max_iter
    cmd = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--debug", "--exp-name", str(exp_dir),
           "--config-override", json.dumps(overrides)] + (["--resume", "auto"] if resume else [])
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_for_checkpoint(exp_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> list[Path]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted((exp_dir / "checkpoints").glob("ckpt_*.pt"))
        if found:
            return found
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


def _iteration(path: Path) -> int:
    return int(path.stem.split("_")[1])


def test_sigint_writes_a_final_checkpoint_and_exits_cleanly(tmp_path):
    exp_dir = tmp_path / "run"
    proc = _start(exp_dir, max_iter=1000)
    first = _wait_for_checkpoint(exp_dir, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    checkpoints = sorted((exp_dir / "checkpoints").glob("ckpt_*.pt"))
    assert _iteration(checkpoints[-1]) >= _iteration(first[-1])
    state = torch.load(checkpoints[-1], weights_only=False)["state"]
    assert state["iteration"] == _iteration(checkpoints[-1]) < 1000


def test_sigkill_then_resume_continues_counters(tmp_path):
    exp_dir = tmp_path / "run"
    proc = _start(exp_dir, max_iter=1000)
    _wait_for_checkpoint(exp_dir, proc)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=60)
    newest = sorted((exp_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    saved = torch.load(newest, weights_only=False)["state"]
    resumed = _start(exp_dir, max_iter=saved["iteration"] + 1, resume=True)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    final = sorted((exp_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(final, weights_only=False)["state"]
    assert state["iteration"] == saved["iteration"] + 1
    assert state["env_steps"] > saved["env_steps"]
