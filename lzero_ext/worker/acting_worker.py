"""Acting workers of the async collection backend: an acting-only policy copy plus a collector, in this process
(a thread drives it) or in a child process.

The async backend's thread calls only :meth:`load` (the learner's ``inference_state``) and :meth:`collect`; with
:class:`ProcessActingWorker` those calls are requests over a pipe, so the thread mostly waits on I/O (no GIL held)
while the child process searches, scores and steps the envs on its own core. With :class:`LocalActingWorker` the
acting runs in the thread itself and competes with the learner for the GIL.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from easydict import EasyDict

from lzero_ext.buffer.game_segment import PriorZeroGameSegment
from lzero_ext.worker.collector import CollectStats, PriorZeroCollector

logger = logging.getLogger(__name__)


@dataclass
class ActedChunk:
    """One ``collect`` of a worker: segments, statistics and the weights versions it acted with."""

    segments: list[PriorZeroGameSegment]
    stats: CollectStats
    act_metrics: dict[str, float]
    llm_version: int
    wm_version: int


class ActingWorker(Protocol):
    def load(self, state: dict[str, Any]) -> None: ...

    def collect(self, train_iter: int) -> ActedChunk: ...

    def close(self) -> None: ...


def make_env_manager(cfg: EasyDict, create_cfg: EasyDict, role: str, env_indices: Sequence[int] | None = None) -> Any:
    """The seeded env manager of ``role`` ('collector' or 'evaluator') for the main config.

    ``env_indices`` keeps only those collector envs (a Ray actor's slice); env ``i`` is seeded ``seed + i`` either way.
    The manager type is ``create_config.env_manager.type`` unless ``env.manager.type`` (main config) names one, e.g.
    ``'subprocess'``: then that config override alone switches it (every env steps in its own process).
    """
    from ding.envs import create_env_manager, get_env_cls, get_env_manager_cls

    env_cls = get_env_cls(create_cfg.env)
    manager_type = (cfg.env.manager or {}).get('type') or create_cfg.env_manager.type
    manager_cfg = get_env_manager_cls(EasyDict(type=manager_type)).default_config()
    manager_cfg.update(cfg.env.manager or {})
    manager_cfg.type = manager_type
    make_cfgs = env_cls.create_collector_env_cfg if role == 'collector' else env_cls.create_evaluator_env_cfg
    env_cfgs = make_cfgs(EasyDict(dict(cfg.env)))
    if env_indices is not None:
        env_cfgs = [env_cfgs[i] for i in env_indices]
    env = create_env_manager(manager_cfg, [partial(env_cls, cfg=c) for c in env_cfgs])
    if role == 'collector':
        env.seed(int(cfg.seed) + (int(env_indices[0]) if env_indices is not None else 0))
    else:
        env.seed(cfg.seed, dynamic_seed=False)
    return env


class LocalActingWorker:
    """Acting policy copy and collector in this process."""

    def __init__(self, actor: Any, collector: PriorZeroCollector) -> None:
        self.actor, self.collector = actor, collector

    @classmethod
    def build(cls, cfg: EasyDict, create_cfg: EasyDict, env: Any | None = None) -> "LocalActingWorker":
        """An acting-only policy (``enable_field=['collect']``) and a collector on ``env`` (built if None)."""
        from ding.policy import create_policy

        policy_cfg = EasyDict(dict(cfg.policy, type=create_cfg.policy.type, import_names=create_cfg.policy.import_names))
        actor = create_policy(policy_cfg, enable_field=['collect'])
        env = make_env_manager(cfg, create_cfg, 'collector') if env is None else env
        collector = PriorZeroCollector(cfg.policy.collect.collector, env, actor.collect_mode,
                                       instance_name='async_collector')
        return cls(actor, collector)

    def load(self, state: dict[str, Any]) -> None:
        self.actor.load_inference_state(state)

    def collect(self, train_iter: int) -> ActedChunk:
        segments = self.collector.collect(train_iter=train_iter)
        return ActedChunk(segments=segments, stats=self.collector.last_stats,
                          act_metrics=self.actor.act_stats.pop_metrics(),
                          llm_version=int(self.actor.weights_version), wm_version=int(self.actor.wm_version))

    def close(self) -> None:
        self.collector.close()


# Exit code of an acting worker process ended by SIGTERM or by its parent's death (after ending its own children).
_TERMINATED_EXIT_CODE = 143
_ENDING = threading.Lock()  # the SIGTERM handler and the parent watch thread: whichever comes first ends the process


def _end_children_and_exit(timeout: float = 5.0) -> None:
    """Child process: end this process's multiprocessing children (the ``subprocess`` env manager's env processes),
    then exit at once. Valid-action workers (``subprocess.Popen`` children of the envs) exit when their stdin
    closes, i.e. with the process that started them."""
    _ENDING.acquire()  # the other caller, if any, waits here until this one exits the process
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(1.0)
    os._exit(_TERMINATED_EXIT_CODE)


def _on_sigterm(_signum: int, _frame: Any) -> None:
    _end_children_and_exit()


def _watch_parent() -> None:
    """Child process: a daemon thread that ends this process (and its children) when the parent dies without
    closing it (e.g. SIGKILL), so no acting worker or env process outlives the learner."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        _end_children_and_exit()

    threading.Thread(target=watch, name='priorzero-parent-watch', daemon=True).start()


def _serve(conn: Any, cfg: EasyDict, create_cfg: EasyDict, torch_threads: int | None) -> None:
    """Child process: build the local worker, then answer (method, argument) requests until 'close'."""
    # SIG_IGN is inherited by the env processes this process starts (fork or spawn): Ctrl-C reaches the whole
    # process group, and the learner alone decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ProcessActingWorker's forced stop: end the env processes too
    # Env processes forked from here (DI-engine's default context) must die on SIGTERM at once, as by default: the env
    # manager and env_recovery end hung ones with it, and a Python handler would wait for the hung C code to return.
    os.register_at_fork(after_in_child=partial(signal.signal, signal.SIGTERM, signal.SIG_DFL))
    _watch_parent()
    import torch

    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    worker = None
    try:
        worker = LocalActingWorker.build(cfg, create_cfg)
        conn.send(('ok', None))
        while True:
            method, argument = conn.recv()
            if method == 'close':
                worker.close()
                conn.send(('ok', None))
                return
            conn.send(('ok', getattr(worker, method)(argument)))
    except EOFError:  # the parent is gone
        pass
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        with contextlib.suppress(OSError):  # the parent may be gone
            conn.send(('error', traceback.format_exc()))
    if worker is not None:
        worker.close()


def _stop_process(process: Any, timeout: float) -> None:
    """Parent side: end ``process`` (SIGTERM: it ends its env processes, then exits; SIGKILL after ``timeout``)
    and join it. Idempotent; a ``multiprocessing.util.Finalize`` callback, so it holds no reference to the worker."""
    if process.exitcode is None:
        process.terminate()
        process.join(timeout)
        if process.exitcode is None:
            logger.warning("the acting worker process did not end in %.0f s after SIGTERM; killing it", timeout)
            process.kill()
    process.join()


class ProcessActingWorker:
    """The same worker in a spawned child process (own envs, own policy copy, own torch threads).

    The process is not daemonic: a daemonic process may not start children, and ``env.manager.type='subprocess'``
    runs every env in one. Its lifetime is bound to the learner's instead: :meth:`close` asks it to close its envs
    and joins it (SIGTERM, then SIGKILL, if it does not exit in time); a ``multiprocessing`` finalizer ends it when
    the worker is garbage-collected or at interpreter exit (before ``multiprocessing`` joins non-daemonic children,
    so an unclosed worker cannot hang the exit); a failed start ends it before raising; and a thread in the child
    ends it (and its env processes) when the learner dies without any of these (SIGKILL). The child ignores SIGINT
    (so do the env processes it starts): Ctrl-C is the learner's to handle, which then closes the worker.
    """

    def __init__(self, cfg: EasyDict, create_cfg: EasyDict, torch_threads: int | None = None,
                 stop_timeout_s: float = 10.0) -> None:
        context = multiprocessing.get_context('spawn')  # no fork of a process holding torch threads
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, cfg, create_cfg, torch_threads),
                                        name='priorzero-acting-worker', daemon=False)
        self._process.start()
        child.close()
        self._stop = multiprocessing.util.Finalize(self, _stop_process, args=(self._process, stop_timeout_s),
                                                   exitpriority=10)
        try:
            self._reply()  # raises if building the envs or the policy failed
        except BaseException:
            self._stop()
            self._conn.close()
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _reply(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError as error:
            raise RuntimeError(f"the acting worker process exited (code {self._process.exitcode})") from error
        if status == 'error':
            raise RuntimeError(f"the acting worker process failed:\n{value}")
        return value

    def _call(self, method: str, argument: Any = None) -> Any:
        self._conn.send((method, argument))
        return self._reply()

    def load(self, state: dict[str, Any]) -> None:
        self._call('load', state)

    def collect(self, train_iter: int) -> ActedChunk:
        return self._call('collect', train_iter)

    def kill(self) -> None:
        """End the child now (when the thread that talks to it does not stop). The pipe stays open: that thread
        may still be reading it; it gets EOF."""
        self._stop()

    def close(self, timeout: float = 60.0) -> None:
        """Ask the child to close its envs and exit; end it if it does not within ``timeout`` s. Idempotent."""
        if self._conn.closed:
            return
        try:
            if self._process.is_alive():
                self._conn.send(('close', None))
                if self._conn.poll(timeout):
                    self._reply()
                else:
                    logger.warning("the acting worker process did not close in %.0f s; ending it", timeout)
                self._process.join(timeout)
        except (RuntimeError, OSError) as error:
            logger.warning("closing the acting worker process: %s", error)
        finally:
            self._stop()
            self._conn.close()
