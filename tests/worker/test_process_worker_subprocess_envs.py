"""The async backend's acting worker process with ``env.manager.type='subprocess'`` (every env in a process of its
own, started by the worker process): it collects, counts env steps, and no process of its tree survives close,
Ctrl-C or the learner's death (tiny debug config on our default game)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lzero_ext.entry.hybrid_loop import HybridTrainer
from lzero_ext.utils.config import deep_merge
from lzero_ext.worker.acting_worker import ProcessActingWorker
from tests.integration.conftest import TINY
from zoo.jericho.priorzero.priorzero_config import get_priorzero_debug_config

REPO_ROOT = Path(__file__).resolve().parents[2]
# DI-engine's default context on Linux (fork) starts env processes fastest; gpu_bench.sh uses spawn.
ASYNC_SUBPROC = dict(collect=dict(backend="async", async_worker="process", torch_threads=1),
                     env=dict(manager=dict(type="subprocess")))


def _config(exp_dir: Path, **overrides):
    return get_priorzero_debug_config(exp_name=str(exp_dir), overrides=deep_merge(deep_merge(TINY, ASYNC_SUBPROC),
                                                                                  overrides))


def _tree(pid: int) -> list[psutil.Process]:
    """``pid``'s descendants, without multiprocessing's resource tracker (it lives as long as its parent)."""
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "resource_tracker" not in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(processes)


def _check_acting_tree(tree: list[psutil.Process], acting_pid: int, env_num: int) -> None:
    """The acting worker runs, and env processes are its children (not the learner's)."""
    by_pid = {p.pid: p for p in tree}
    assert acting_pid in by_pid
    env_processes = [p for p in tree if p.ppid() == acting_pid and "resource_tracker" not in " ".join(_cmdline(p))]
    assert len(env_processes) >= env_num, [(p.pid, p.ppid(), _cmdline(p)[-2:]) for p in tree]


def test_process_worker_runs_subprocess_envs_counts_steps_and_leaves_no_process(tmp_path):
    cfg, create_cfg = _config(tmp_path / "run", train=dict(max_iter=2, save_freq=0))
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        worker = trainer.collector._worker
        assert isinstance(worker, ProcessActingWorker)
        trainer.run()
        tree = _tree(os.getpid())
        _check_acting_tree(tree, worker.pid, cfg.env.collector_env_num)
        assert trainer.collector.envstep == 2 * 8 and trainer.collector.total_episodes >= 1
        assert trainer.collector.last_stats.env_steps == 8
    finally:
        trainer.close()
    assert worker._process.exitcode == 0, "close() must end the worker by its own exit, not by a signal"
    # Processes end asynchronously (a valid-action worker, e.g., when its env process's pipe closes): allow 10 s.
    survivors = _wait_gone(tree, timeout=10)
    assert not survivors, [(p.pid, _cmdline(p)[-2:]) for p in survivors]


# The learner without close(): it prints its acting tree, then sleeps until a signal arrives.
LEARNER = """
import json, os, signal, sys, time
# A job started in the background by a non-interactive shell (as CI may run the suite) inherits SIGINT ignored;
# restore Python's default so Ctrl-C reaches this learner as it does in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
from lzero_ext.entry.hybrid_loop import HybridTrainer
from tests.worker.test_process_worker_subprocess_envs import _config, _tree
if __name__ == '__main__':
    from pathlib import Path
    cfg, create_cfg = _config(Path(sys.argv[1]), train=dict(max_iter=1, save_freq=0))
    trainer = HybridTrainer(cfg, create_cfg)
    trainer.collector.collect(train_iter=0)
    print('ACTING_TREE', json.dumps(dict(acting=trainer.collector._worker.pid, tree=[p.pid for p in _tree(os.getpid())],
                          envstep=trainer.collector.envstep)), flush=True)
    time.sleep(600)  # no try/finally: the at-exit finalizer (Ctrl-C) or the worker's parent watch (SIGKILL) must act
"""


@pytest.mark.parametrize("how", ["ctrl_c", "sigkill"])
def test_no_process_survives_the_learner_without_close(tmp_path, how):
    log_path = tmp_path / "learner.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", LEARNER, str(tmp_path / "run")], cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT)))
    try:
        info = _wait_for_tree(proc, log_path, timeout=120)
        tree = [psutil.Process(pid) for pid in info["tree"]]
        _check_acting_tree(tree, info["acting"], 2)
        assert info["envstep"] == 8
        if how == "ctrl_c":  # SIGINT to the whole process group, as a terminal's Ctrl-C
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)  # the interpreter exit is not held up by the non-daemonic worker
        else:
            proc.kill()
            proc.wait(timeout=10)
        survivors = _wait_gone(tree, timeout=20)
        assert not survivors, [(p.pid, _cmdline(p)[-2:]) for p in survivors]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_tree(proc: subprocess.Popen, log_path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("ACTING_TREE "):
                return json.loads(line.split(" ", 1)[1])
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "the learner printed no acting tree"
        time.sleep(0.2)
