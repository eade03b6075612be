"""Collection on Ray: collector actors, each with its own envs and acting-only policy; the learner stays in the driver.

When one process cannot step the envs and run the acting policy fast enough, the project scales out with Ray rather
than a home-made process pool. :class:`RayCollectionBackend` implements the loop's collection-backend interface
(``collect`` / ``sync_weights`` / ``close`` plus the ``envstep``, ``total_episodes`` and ``last_stats`` counters):

* ``num_collectors`` actors (:class:`CollectorActor`), each owning a slice of the ``collector_env_num`` envs (built
  from the env config through DI-engine's registry, as the single-process loop does), an acting-only
  :class:`~lzero_ext.policy.priorzero_policy.PriorZeroPolicy` on CPU (world model + search + LLM prior) and a
  :class:`~lzero_ext.worker.collector.PriorZeroCollector`. Env ``i`` keeps the seed it has in the single-process loop;
  each actor's action-sampling RNG is offset, so actors do not draw the same noise.
* The LLM prior runs inside each actor (one batched prior call per step over that actor's envs). There is no
  separate prior-server actor: on CPU it would serialise the actors' prior calls onto one process.
* ``sync_weights()`` takes the learner's :meth:`~PriorZeroPolicy.inference_state` (CPU weights + versions), puts it
  in the object store once (``ray.put``) and has every actor load that one object. Each actor reports the versions it
  acted with, so the staleness of collected data against the learner is logged.
* ``collect()`` splits the iteration's ``n_steps`` over the actors, runs them concurrently and merges their
  segments and statistics (env steps, episodes, returns; env steps/s is the aggregate wall-clock rate).

``ray`` is optional (``pip install -r requirements/ray.txt``): it is imported only when this backend starts. Without
``ray_address`` a light local cluster is started (no dashboard, small object store); with ``ray_address='auto'`` (or
``host:port``) the actors go to an existing cluster started by ``ray start --head`` / ``ray start --address=...``.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np
from easydict import EasyDict

from lzero_ext.buffer.game_segment import PriorZeroGameSegment
from lzero_ext.utils.config import merge_strict, schema_validator
from lzero_ext.worker.collector import CollectStats, PriorZeroCollector

logger = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray==2.60.0"  # keep equal to requirements/ray.txt
RAY_INSTALL_HINT = (f"Install it with `pip install -r requirements/ray.txt` (pins {RAY_REQUIREMENT} and its "
                    f"dependencies; scripts/install.sh does this with WITH_RAY=1), or use the in-process "
                    f"collection backend.")
# Actors' action-sampling seeds are cfg.seed + ACTOR_SEED_STRIDE * actor_index (actor 0 samples as the sync loop).
ACTOR_SEED_STRIDE = 100_003


def import_ray():
    """Import ``ray`` or fail with one message saying how to install the pinned version."""
    from lzero_ext.import_utils import require

    require("ray", "The Ray collection backend (collect backend 'ray')", RAY_INSTALL_HINT)
    import ray

    return ray


def split_budget(total: int, parts: int) -> list[int]:
    """``total`` env steps over ``parts`` actors, as even as possible (the first ones take the remainder)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def split_envs(num_envs: int, parts: int) -> list[range]:
    """Global env indices owned by each actor: contiguous slices, sizes as even as possible."""
    if num_envs < parts:
        raise ValueError(f"env.collector_env_num={num_envs} must be >= the number of Ray collectors ({parts}): "
                         f"every collector actor owns at least one env")
    bounds = np.cumsum([0] + split_budget(num_envs, parts))
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def acting_config(cfg: EasyDict, actor_index: int) -> EasyDict:
    """The main config as an actor uses it: CPU acting, its own sampling seed."""
    cfg = copy.deepcopy(cfg)
    policy = cfg.policy
    policy.device = 'cpu'
    policy.cuda = False
    policy.model.device = 'cpu'
    policy.llm.prior.device = 'cpu'
    policy.llm.trainer.device = 'cpu'
    policy.collect.seed = int(cfg.seed) + ACTOR_SEED_STRIDE * actor_index
    return cfg


def _quiet_root_logger() -> None:
    """Actors log at the entry's level (``PRIORZERO_LOG_LEVEL``, default WARNING): Ray's worker set-up and
    DI-engine's import lower the root level, and every actor's INFO lines would reach the driver's console."""
    logging.getLogger().setLevel(os.environ.get("PRIORZERO_LOG_LEVEL", "WARNING"))


class CollectorActor:
    """One Ray collector: its envs, an acting-only policy and a PriorZeroCollector (wrapped by ``ray.remote``)."""

    def __init__(self, cfg: EasyDict, create_cfg: EasyDict, actor_index: int, env_indices: Sequence[int],
                 torch_threads: int) -> None:
        import torch
        from ding.policy import create_policy

        from lzero_ext.worker.acting_worker import make_env_manager

        torch.set_num_threads(max(1, torch_threads))
        _quiet_root_logger()
        self.actor_index = actor_index
        cfg = acting_config(cfg, actor_index)
        policy_cfg = EasyDict(dict(cfg.policy, type=create_cfg.policy.type,
                                   import_names=create_cfg.policy.import_names))
        self.policy = create_policy(policy_cfg, enable_field=['collect'])
        env = make_env_manager(cfg, create_cfg, 'collector', env_indices)  # env i: seed + i, as in one process
        self.collector = PriorZeroCollector(cfg.policy.collect.collector, env, self.policy.collect_mode,
                                            instance_name=f'ray_collector_{actor_index}')
        _quiet_root_logger()  # importing DI-engine's modules above lowered it again

    def ready(self) -> int:
        """Answers once the constructor finished (envs and policy built)."""
        return os.getpid()

    def load_inference_state(self, state: dict[str, Any]) -> tuple[int, int]:
        """Load the learner's acting weights; returns (LLM weights version, world-model version) now in use."""
        self.policy.load_inference_state(state)
        return int(self.policy.weights_version), int(self.policy.wm_version)

    def collect(self, n_steps: int, train_iter: int) -> dict[str, Any]:
        _quiet_root_logger()
        segments = self.collector.collect(n_steps=n_steps, train_iter=train_iter)
        return dict(segments=segments, stats=self.collector.last_stats,
                    act_metrics=self.policy.act_stats.pop_metrics(),
                    weights_version=int(self.policy.weights_version), wm_version=int(self.policy.wm_version))

    def close(self) -> None:
        self.collector.close()


class RayCollectionBackend:
    """Collection over ``num_collectors`` Ray actors (see the module docstring); the learner policy stays here."""

    config = dict(
        # (int) Collector actors; env.collector_env_num envs are split over them (each needs at least one).
        num_collectors=2,
        # (str | None) None: start a local Ray cluster in this process; 'auto' or 'host:port': join an existing one
        # (started with `ray start --head`, other machines joined with `ray start --address=<head>:6379`).
        ray_address=None,
        # (int | None) Local cluster only: logical CPUs Ray may schedule; None = num_collectors * actor_num_cpus.
        num_cpus=None,
        # (int) Local cluster only: object-store size in MiB (holds one copy of the acting weights per sync).
        object_store_mb=128,
        # (float) CPUs each collector actor reserves in Ray's scheduler.
        actor_num_cpus=1.0,
        # (int) torch threads inside each actor (its world model, search and LLM prior run on CPU).
        torch_threads=1,
        # (bool) Forward actors' stdout/stderr (warnings, errors) to the driver's console.
        log_to_driver=True,
        # (float) Seconds to wait for every actor to be built before failing (a cluster without free CPUs waits).
        start_timeout_s=300.0,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    @classmethod
    def check_user_config(cls, value: Any, where: str = 'collect.ray') -> None:
        """Validator of ``collect.ray`` (the settings above except ``num_collectors``, which is
        ``collect.num_collectors``): an unknown key raises ``KeyError`` naming the nearest, a mistyped value
        ``TypeError``, when the config is built rather than when Ray starts."""
        if isinstance(value, Mapping) and 'num_collectors' in value:
            raise KeyError(f"Config key '{where}.num_collectors' is set as 'collect.num_collectors'")
        schema_validator({k: v for k, v in cls.config.items() if k != 'num_collectors'})(value, where)

    def __init__(self, cfg: EasyDict, create_cfg: EasyDict, policy: Any, backend_cfg: dict | None = None) -> None:
        self._ray = import_ray()
        self.cfg = merge_strict(self.default_config(), dict(backend_cfg or {}), where='ray_collection')
        self._policy = policy
        self._n_steps = int(cfg.policy.collect.collector.n_steps)
        self.envstep = 0
        self.total_episodes = 0
        self.last_stats: CollectStats = CollectStats()
        self.acting_versions: tuple[int, int] = (-1, -1)  # (LLM, world model) the actors hold
        self._weights_ref = None
        self._pushed_llm_version: int | None = None
        self._started_ray = False
        self._connect()
        self._actors: list[Any] = []
        try:
            self._start_actors(cfg, create_cfg)
            self.sync_weights()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _connect(self) -> None:
        ray, c = self._ray, self.cfg
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=c.log_to_driver, configure_logging=False)
        if c.ray_address:
            ray.init(address=c.ray_address, **kwargs)
        else:
            num_cpus = c.num_cpus if c.num_cpus is not None else int(np.ceil(c.num_collectors * c.actor_num_cpus))
            ray.init(num_cpus=num_cpus, object_store_memory=int(c.object_store_mb) * 1024 * 1024, **kwargs)
        self._started_ray = True
        logger.info("Ray cluster: %s", ray.cluster_resources())

    def _start_actors(self, cfg: EasyDict, create_cfg: EasyDict) -> None:
        ray, c = self._ray, self.cfg
        remote_cls = ray.remote(num_cpus=c.actor_num_cpus)(CollectorActor)
        slices = split_envs(int(cfg.env.collector_env_num), int(c.num_collectors))
        self._actors = [remote_cls.remote(cfg, create_cfg, i, list(envs), c.torch_threads)
                        for i, envs in enumerate(slices)]
        try:
            ray.get([a.ready.remote() for a in self._actors], timeout=c.start_timeout_s)
        except ray.exceptions.GetTimeoutError as error:
            raise RuntimeError(
                f"{c.num_collectors} Ray collector actors (each {c.actor_num_cpus} CPU) were not ready after "
                f"{c.start_timeout_s:.0f} s; the cluster has {ray.available_resources().get('CPU', 0)} free CPUs. "
                f"Lower num_collectors/actor_num_cpus or add nodes"
            ) from error

    @property
    def num_collectors(self) -> int:
        return len(self._actors)

    # ------------------------------------------------------------------ interface
    def sync_weights(self) -> None:
        """Push the learner's newest acting weights: one object-store copy, loaded by every actor."""
        ray = self._ray
        llm_version = self._policy.weights_version  # the LLM part only when it changed (it is the large part)
        state = self._policy.inference_state(include_llm=llm_version != self._pushed_llm_version)
        self._weights_ref = ray.put(state)  # the previous copy is freed once no reference remains
        self._pushed_llm_version = llm_version
        loaded = ray.get([a.load_inference_state.remote(self._weights_ref) for a in self._actors])
        self.acting_versions = min(loaded)

    def collect(self, train_iter: int = 0, n_steps: int | None = None) -> list[PriorZeroGameSegment]:
        """``n_steps`` env steps (default ``collector.n_steps``) split over the actors; merged segments."""
        ray = self._ray
        budget = self._n_steps if n_steps is None else int(n_steps)
        tic = time.perf_counter()
        parts = [b for b in split_budget(budget, self.num_collectors)]
        results = ray.get([a.collect.remote(b, train_iter) for a, b in zip(self._actors, parts) if b > 0])
        seconds = time.perf_counter() - tic
        segments: list[PriorZeroGameSegment] = []
        stats = CollectStats(seconds=seconds)
        for result in results:
            segments += result['segments']
            part: CollectStats = result['stats']
            stats.env_steps += part.env_steps
            stats.episodes += part.episodes
            stats.policy_seconds += part.policy_seconds / len(results)  # mean actor time in the policy
            stats.returns += part.returns
            stats.scores += part.scores
            stats.dropped_episodes += part.dropped_episodes
        stats.extra = self._extra_metrics(results)
        self.envstep += stats.env_steps
        self.total_episodes += stats.episodes
        self.last_stats = stats
        return segments

    def _extra_metrics(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """Actor perf metrics (means) and how far the acting weights lag behind the learner's."""
        keys = {k for r in results for k in r['act_metrics']}
        out = {k: float(np.mean([r['act_metrics'][k] for r in results if k in r['act_metrics']])) for k in keys}
        llm_acting = min(r['weights_version'] for r in results)
        wm_acting = min(r['wm_version'] for r in results)
        out['collect/acting_llm_version'] = float(llm_acting)
        out['collect/acting_wm_version'] = float(wm_acting)
        out['collect/llm_version_lag'] = float(self._policy.weights_version - llm_acting)
        out['collect/wm_version_lag'] = float(self._policy.wm_version - wm_acting)
        out['collect/num_collectors'] = float(len(results))
        return out

    def close(self) -> None:
        """Close every actor's envs, end the actors and, if this backend started it, the local Ray cluster."""
        ray = self._ray
        if self._actors:
            try:
                ray.get([a.close.remote() for a in self._actors], timeout=60)
            except Exception as error:  # noqa: BLE001 - a dead actor must not stop the shutdown
                logger.warning("closing Ray collector actors: %s", error)
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
        self._weights_ref = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
