"""Acting workers of the async collection backend: an acting-only policy copy plus a collector, in this process
(a thread drives it) or in a child process.

The async backend's thread calls only :meth:`load` (the learner's ``inference_state``) and :meth:`collect`; with
:class:`ProcessActingWorker` those calls are requests over a pipe, so the thread mostly waits on I/O (no GIL held)
while the child process searches, scores and steps the envs on its own core. With :class:`LocalActingWorker` the
acting runs in the thread itself and competes with the learner for the GIL.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
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


def _serve(conn: Any, cfg: EasyDict, create_cfg: EasyDict, torch_threads: int | None) -> None:
    """Child process: build the local worker, then answer (method, argument) requests until 'close'."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (Ctrl-C reaches the group)
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
        if worker is not None:
            worker.close()
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(('error', traceback.format_exc()))
        if worker is not None:
            worker.close()


class ProcessActingWorker:
    """The same worker in a spawned child process (own envs, own policy copy, own torch threads)."""

    def __init__(self, cfg: EasyDict, create_cfg: EasyDict, torch_threads: int | None = None) -> None:
        context = multiprocessing.get_context('spawn')  # no fork of a process holding torch threads
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, cfg, create_cfg, torch_threads),
                                        name='priorzero-acting-worker', daemon=True)
        self._process.start()
        child.close()
        self._reply()  # raises if building the envs or the policy failed

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
        """End the child at once (when the thread that talks to it does not stop)."""
        self._process.kill()
        self._process.join(5)

    def close(self, timeout: float = 60.0) -> None:
        if self._process.is_alive():
            try:
                self._call('close')
            except (RuntimeError, OSError) as error:
                logger.warning("closing the acting worker process: %s", error)
            self._process.join(timeout)
            if self._process.is_alive():
                logger.warning("the acting worker process did not exit in %.0f s; terminating it", timeout)
                self._process.terminate()
                self._process.join(5)
        self._conn.close()
