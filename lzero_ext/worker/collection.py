"""Collection backends: how the hybrid loop gets its game segments, behind one small interface.

The loop only needs ``collect`` (segments of one iteration), ``sync_weights`` (called after the learners changed the
weights) and ``close``, plus the ``envstep`` / ``total_episodes`` counters and ``last_stats``. ``collect.backend``
picks the implementation:

* ``sync``: :class:`~lzero_ext.worker.collector.PriorZeroCollector` itself, in the loop's thread, acting with the learner's
  own modules (the newest weights, no copy); collection and learning take turns.
* ``async``: :class:`AsyncCollectionBackend`, the same collector with its own acting-only policy copy, refreshed by
  ``sync_weights``, driven by a background thread: collection of the next chunk overlaps with learning on the
  previous one. ``async_worker='process'`` (default) runs the copy and its envs in a child process
  (:mod:`lzero_ext.worker.acting_worker`; with ``env.manager.type='subprocess'`` that process starts one process per
  env); ``'thread'`` runs them in the thread (measured slower on a 2-core CPU: the search and the learner contend
  for the GIL). Data staleness is bounded by ``max_staleness`` (see the class).
  Not deterministic: timing decides which weights a chunk is collected with.
* ``ray``: :class:`~lzero_ext.worker.ray_collector.RayCollectionBackend`, collector actors on a Ray cluster
  (optional dependency, ``collect.ray`` holds its settings).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from easydict import EasyDict

from lzero_ext.buffer.game_segment import PriorZeroGameSegment
from lzero_ext.utils.config import merge_strict
from lzero_ext.worker.acting_worker import ActedChunk, ActingWorker, LocalActingWorker, ProcessActingWorker
from lzero_ext.worker.collector import CollectStats, PriorZeroCollector

logger = logging.getLogger(__name__)

BACKENDS = ("sync", "async", "ray")
ASYNC_WORKERS = ("process", "thread")

config = dict(
    # (str) 'sync' (collect, then learn, in one thread), 'async' (a collector thread overlaps with learning) or
    # 'ray' (collector actors on a Ray cluster; needs `pip install -r requirements/ray.txt`).
    backend='sync',
    # (int) async: most learner weight publishes (sync_weights calls) a chunk of data may lag behind the learner
    # when the loop consumes it; 1 = collect the next chunk while the learner trains on the current one. Chunks
    # that became staler (e.g. during LLM phases without collection) are dropped, not trained on.
    max_staleness=1,
    # (str) async: where the acting copy runs: 'process' (a spawned child process, own core; it may start the env
    # processes of env.manager.type='subprocess') or 'thread'.
    async_worker='process',
    # (int | None) torch intra-op threads of the learner process (every backend) and of the async acting worker
    # process; None leaves torch's default. 1 is fastest for the small debug models on a 2-core machine.
    torch_threads=None,
    # (float) async: seconds close() waits for the collector thread to finish its chunk.
    stop_timeout_s=120.0,
    # (int) ray: collector actors (env.collector_env_num envs are split over them).
    num_collectors=2,
    # (dict) ray: other RayCollectionBackend settings (ray_address, actor_num_cpus, ...); keys and types checked
    # against RayCollectionBackend.config when the config is built (RayCollectionBackend.check_user_config).
    ray=dict(),
)


def default_config() -> EasyDict:
    return EasyDict(copy.deepcopy(config))


class CollectionBackend(Protocol):
    """What the hybrid loop needs from collection."""

    envstep: int
    total_episodes: int
    last_stats: CollectStats

    def collect(self, train_iter: int) -> list[PriorZeroGameSegment]: ...

    def sync_weights(self) -> None: ...  # the loop calls it after learner updates; pushes the newest weights

    def close(self) -> None: ...


@dataclass
class _Chunk:
    """One ``collect`` of the worker, tagged with the learner publish it acted with."""

    acted: ActedChunk
    version: int  # number of sync_weights publishes the acting weights came from


class AsyncCollectionBackend:
    """Collection by an acting worker, driven by a background thread, overlapping with learning (module docstring).

    Versions: every ``sync_weights`` call publishes one learner version (a CPU snapshot from
    :meth:`~lzero_ext.policy.priorzero_policy.PriorZeroPolicy.inference_state`, taken in the loop's thread between
    updates, so the copy never reads weights while they change). The thread loads the newest published snapshot
    before each chunk, so a chunk's staleness = publishes at consumption − publish it acted with. It starts a chunk
    only while fewer than ``max_staleness`` finished chunks wait, which bounds staleness by ``max_staleness`` when the
    loop publishes once per consumed chunk; a chunk found staler at consumption (publishes without collection) is
    dropped and the loop waits for a fresh one. Unconsumed chunks are not checkpointed (their env steps are not
    counted either); a resumed run collects anew.
    """

    def __init__(self, policy: Any, worker: ActingWorker, backend_cfg: dict | None = None) -> None:
        """``policy``: the learner; ``worker``: acting-only copy + collector (in this process or a child)."""
        self.cfg = merge_strict(default_config(), dict(backend_cfg or {}), where='collect', open_keys=('ray',))
        if self.cfg.max_staleness < 1:
            raise ValueError(f"collect.max_staleness must be >= 1 for the async backend, got "
                             f"{self.cfg.max_staleness} (use collect.backend='sync' for no staleness)")
        self._policy = policy
        self._worker = worker
        self.envstep = 0
        self.total_episodes = 0
        self.last_stats: CollectStats = CollectStats()
        self._cond = threading.Condition()
        self._ready: collections.deque[_Chunk] = collections.deque()
        self._published = 0
        self._pending: dict[str, Any] | None = None
        self._published_llm_version: int | None = None
        self._train_iter = 0
        self._stop = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._dropped_chunks = 0
        self._consumed = 0
        self._staleness_sum = 0
        self._staleness_max = 0
        self._blocked_seconds = 0.0
        try:
            self._worker.load(self._snapshot())  # the copy starts with the learner's weights
        except BaseException:
            self._worker.close()
            raise

    @classmethod
    def build(cls, cfg: EasyDict, create_cfg: EasyDict, policy: Any, make_env: Callable[[], Any],
              backend_cfg: dict | None = None) -> "AsyncCollectionBackend":
        """The backend for the main config (``collect.async_worker`` says where the acting copy runs)."""
        backend_cfg = merge_strict(default_config(), dict(backend_cfg or {}), where='collect', open_keys=('ray',))
        if backend_cfg.async_worker not in ASYNC_WORKERS:
            raise ValueError(f"collect.async_worker must be one of {ASYNC_WORKERS}, got {backend_cfg.async_worker!r}")
        if backend_cfg.async_worker == 'process':
            worker: ActingWorker = ProcessActingWorker(cfg, create_cfg, backend_cfg.torch_threads)
        else:
            worker = LocalActingWorker.build(cfg, create_cfg, make_env())
        return cls(policy, worker, backend_cfg)

    # ------------------------------------------------------------------ loop side
    def _snapshot(self) -> dict[str, Any]:
        """The learner's acting weights; the LLM part only when its version moved (it may be large)."""
        version = self._policy.weights_version
        state = self._policy.inference_state(include_llm=version != self._published_llm_version)
        self._published_llm_version = version
        return state

    def sync_weights(self) -> None:
        state = self._snapshot()
        with self._cond:
            if self._pending is not None and state['llm'] is None:  # keep the unloaded LLM weights
                state['llm'] = self._pending['llm']
            self._pending = state
            self._published += 1
            self._cond.notify_all()

    def collect(self, train_iter: int = 0) -> list[PriorZeroGameSegment]:
        """The oldest chunk that is fresh enough; waits for the thread when none is ready."""
        tic = time.perf_counter()
        with self._cond:
            self._train_iter = train_iter
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='priorzero-async-collector', daemon=True)
                self._thread.start()
            while True:
                while not self._ready and self._error is None:
                    self._cond.wait()
                if self._error is not None:
                    raise RuntimeError("the async collector thread failed") from self._error
                chunk = self._ready.popleft()
                self._cond.notify_all()  # room for the next chunk
                staleness = self._published - chunk.version
                if staleness <= self.cfg.max_staleness:
                    break
                self._dropped_chunks += 1
                logger.info("dropped a collected chunk %d publishes stale (max_staleness=%d)", staleness,
                            self.cfg.max_staleness)
            waited = time.perf_counter() - tic
            queued = len(self._ready)
            blocked, self._blocked_seconds = self._blocked_seconds, 0.0
        acted = chunk.acted
        stats = CollectStats(
            env_steps=acted.stats.env_steps, episodes=acted.stats.episodes, seconds=acted.stats.seconds,
            policy_seconds=acted.stats.policy_seconds, returns=acted.stats.returns, scores=acted.stats.scores,
            dropped_episodes=acted.stats.dropped_episodes,
        )
        self._staleness_sum += staleness
        self._staleness_max = max(self._staleness_max, staleness)
        self._consumed += 1
        stats.extra = dict(acted.act_metrics)
        stats.extra.update({
            'async/staleness': float(staleness),
            'async/staleness_mean': self._staleness_sum / self._consumed,  # over the run so far
            'async/staleness_max': float(self._staleness_max),
            'async/learner_wait_seconds': waited,  # the loop waited for data
            'async/collector_blocked_seconds': blocked,  # the thread waited for the loop (staleness bound)
            'async/queued_chunks': float(queued),
            'async/dropped_stale_chunks': float(self._dropped_chunks),
            'collect/wm_version_lag': float(self._policy.wm_version - acted.wm_version),
            'collect/llm_version_lag': float(self._policy.weights_version - acted.llm_version),
        })
        self.envstep += stats.env_steps
        self.total_episodes += stats.episodes
        self.last_stats = stats
        return acted.segments

    def close(self) -> None:
        """Stop the thread after its current chunk, then close the worker (its envs, its process)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.stop_timeout_s)
            if self._thread.is_alive():  # it still uses the worker: only a process (and its env processes) can be ended
                logger.warning("the async collector thread did not stop within %.0f s", self.cfg.stop_timeout_s)
                if isinstance(self._worker, ProcessActingWorker):
                    self._worker.kill()
                return
        self._worker.close()

    # ------------------------------------------------------------------ thread side
    def _stream(self) -> contextlib.AbstractContextManager:
        """A thread worker on CUDA acts on its own stream: on the learner's (default) stream its small search
        kernels would queue behind the training kernels, and every read-back would wait for a whole update."""
        if isinstance(self._worker, LocalActingWorker) and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.stream(torch.cuda.Stream())
        return contextlib.nullcontext()

    def _run(self) -> None:
        try:
            with self._stream():
                self._loop()
        except BaseException as error:  # noqa: BLE001 - handed to the loop's thread, which raises it
            logger.exception("async collector thread failed")
            with self._cond:
                self._error = error
                self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                tic = time.perf_counter()
                while not self._stop and len(self._ready) >= self.cfg.max_staleness:
                    self._cond.wait()
                self._blocked_seconds += time.perf_counter() - tic
                if self._stop:
                    return
                pending, self._pending = self._pending, None
                version, train_iter = self._published, self._train_iter
            if pending is not None:
                self._worker.load(pending)
            chunk = _Chunk(acted=self._worker.collect(train_iter), version=version)
            with self._cond:
                self._ready.append(chunk)
                self._cond.notify_all()


def build_collection_backend(cfg: EasyDict, create_cfg: EasyDict, policy: Any,
                             make_env: Callable[[], Any]) -> CollectionBackend:
    """The backend ``cfg.collect.backend`` names, acting for ``policy`` (the learner); ``make_env`` builds the
    collector env manager (not called for 'ray', whose actors build their own envs)."""
    backend_cfg = merge_strict(default_config(), dict(cfg.get('collect', {}) or {}), where='collect',
                               open_keys=('ray',))
    if backend_cfg.backend not in BACKENDS:
        raise ValueError(f"collect.backend must be one of {BACKENDS}, got {backend_cfg.backend!r}")
    if backend_cfg.torch_threads is not None:
        torch.set_num_threads(int(backend_cfg.torch_threads))
    if backend_cfg.backend == 'sync':
        return PriorZeroCollector(cfg.policy.collect.collector, make_env(), policy.collect_mode)
    if backend_cfg.backend == 'async':
        return AsyncCollectionBackend.build(cfg, create_cfg, policy, make_env, backend_cfg)
    from lzero_ext.worker.ray_collector import RayCollectionBackend

    return RayCollectionBackend(cfg, create_cfg, policy,
                                dict(backend_cfg.ray, num_collectors=backend_cfg.num_collectors))
