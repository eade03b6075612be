"""Training schedules and the async collection backend on our default game (tiny sizes): phase order, counters,
staleness bound, checkpoint/resume and SIGINT."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lzero_ext.entry.hybrid_loop import HybridTrainer
from lzero_ext.entry.schedule import PHASE_CODES
from lzero_ext.utils.metrics import read_metrics
from tests.integration.conftest import TINY

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(tiny_config, **overrides) -> tuple[HybridTrainer, list[dict]]:
    cfg, create_cfg = tiny_config(**overrides)
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        trainer.run()
    finally:
        trainer.close()
    records = [r for r in read_metrics(trainer.exp_dir / "log") if "schedule/phase" in r]
    return trainer, records


def test_sequential_runs_wm_phase_then_llm_updates_without_collecting(tiny_config):
    trainer, records = _run(tiny_config, train=dict(
        mode="sequential", wm_phase_iters=2, llm_phase_updates=3, llm_updates_per_iter=2, wm_updates_per_iter=2,
        llm_phase_collect=False, max_iter=5))
    phases = [r["schedule/phase"] for r in records]
    assert phases == [PHASE_CODES[p] for p in ("wm", "wm", "llm", "llm", "wm")]
    llm_updates = [r["counters/llm_updates"] for r in records]
    wm_updates = [r["counters/wm_updates"] for r in records]
    steps = [r["counters/env_steps"] for r in records]
    # No LLM update in world-model phases, 2 + 1 in the LLM phase; the world model does not train during it.
    assert llm_updates == [0, 0, 2, 3, 3]
    assert wm_updates[2] == wm_updates[3] == wm_updates[1] and wm_updates[4] == wm_updates[3] + 2
    assert steps[2] == steps[3] == steps[1] and steps[4] > steps[3], "LLM phase must not collect"
    assert trainer.policy.weights_version == 3


def test_alternating_switches_phases_and_keeps_collecting(tiny_config):
    trainer, records = _run(tiny_config, train=dict(mode="alternating", alternate_every=2, max_iter=4))
    assert [r["schedule/phase"] for r in records] == [PHASE_CODES[p] for p in ("wm", "wm", "llm", "llm")]
    steps = [r["counters/env_steps"] for r in records]
    assert all(b > a for a, b in zip(steps, steps[1:])), "every phase collects by default"
    assert [r["counters/llm_updates"] for r in records] == [0, 0, 1, 2]
    assert records[-1]["counters/wm_updates"] == records[1]["counters/wm_updates"] > 0


def test_async_backend_trains_with_bounded_staleness_and_resumes(tiny_config):
    overrides = dict(collect=dict(backend="async", max_staleness=1), train=dict(max_iter=4))
    trainer, records = _run(tiny_config, **overrides)
    assert trainer.collector._thread is not None and not trainer.collector._thread.is_alive()
    assert records[-1]["counters/env_steps"] == 4 * 8 == trainer.collector.envstep
    assert records[-1]["counters/llm_updates"] > 0 and trainer.policy.weights_version > 0
    assert all(r["async/staleness"] <= 1 for r in records)
    assert records[-1]["async/staleness_max"] <= 1
    saved = torch.load(sorted((trainer.exp_dir / "checkpoints").glob("ckpt_*.pt"))[-1], weights_only=False)["state"]

    cfg, create_cfg = tiny_config(collect=dict(backend="async"), train=dict(max_iter=5))
    resumed = HybridTrainer(cfg, create_cfg, resume="auto")
    try:
        assert (resumed.iteration, resumed.collector.envstep) == (4, saved["env_steps"])
        assert (resumed.wm_updates, resumed.llm_updates) == (saved["wm_updates"], saved["llm_updates"])
        assert resumed.policy.wm_version > 0
        resumed.run()
        assert resumed.iteration == 5 and resumed.collector.envstep == saved["env_steps"] + 8
    finally:
        resumed.close()
    first = [r for r in read_metrics(resumed.exp_dir / "log") if "async/staleness" in r][len(records)]
    assert first["collect/wm_version_lag"] == 0, "the acting copy must start from the resumed weights"


def test_async_sigint_writes_a_final_checkpoint_and_stops_the_collector_thread(tmp_path):
    exp_dir = tmp_path / "run"
    overrides = json.loads(json.dumps(TINY))
    overrides["train"]["max_iter"] = 1000
    overrides["collect"] = dict(backend="async")
    cmd = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--debug", "--exp-name", str(exp_dir),
           "--config-override", json.dumps(overrides)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 300
    while not list((exp_dir / "checkpoints").glob("ckpt_*.pt")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    newest = sorted((exp_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    state = torch.load(newest, weights_only=False)["state"]
    assert 0 < state["iteration"] < 1000 and state["env_steps"] == 8 * state["iteration"]
