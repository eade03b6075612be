"""The hybrid training loop: evaluate → collect → train world model → train LLM → sync prior → log → checkpoint.

Env-agnostic: the env class comes from ``create_config.env`` through DI-engine's registry. One iteration collects
``collector.n_steps`` env steps with the current policy, pushes completed segments to the buffer, then runs the
learners the :class:`~lzero_ext.entry.schedule.TrainSchedule` plans for it (``train.mode``: parallel, sequential or
alternating phases). Collection goes through a backend (``collect.backend``, :mod:`lzero_ext.worker.collection`):
``sync`` acts with the learner's own modules (the LLM prior shares the trainer's weights or receives them after each
update), ``async`` / ``ray`` act with copies that ``sync_weights`` refreshes after every iteration that trained.

Checkpoints (``<exp>/checkpoints/ckpt_<iter>.pt``) hold everything needed to continue: learner states (world model,
target network, optimisers, LLM or LoRA weights, scheduler, weights version), counters, the last 100 training returns
(``collect/return_last100``), every RNG state and, if configured, the replay buffer. SIGINT/SIGTERM finish the current phase, write a final checkpoint and exit cleanly.

Data parallelism (``torchrun``, :mod:`lzero_ext.distributed`): every rank runs this loop with its own envs, buffer and
LLM prior; both learners average gradients over ranks; rank 0 alone logs, evaluates, checkpoints and exports. The
decisions that gate a collective (train or not, stop or not) are taken jointly, so no rank waits alone.
"""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ding.policy import create_policy
from easydict import EasyDict
from tqdm import tqdm

from lzero_ext.buffer.game_buffer import PriorZeroGameBuffer
from lzero_ext.distributed import DistContext
from lzero_ext.entry.checkpoint import CheckpointManager, config_fingerprint
from lzero_ext.entry.schedule import PHASE_CODES, IterationPlan, TrainSchedule
from lzero_ext.import_utils import availability_summary
from lzero_ext.utils.metrics import MetricsLogger
from lzero_ext.utils.seeding import capture_rng_state, restore_rng_state, set_seed
from lzero_ext.worker.acting_worker import make_env_manager
from lzero_ext.worker.collection import build_collection_backend
from lzero_ext.worker.evaluator import PriorZeroEvaluator

logger = logging.getLogger(__name__)

# Metric names the design document fixes (TensorBoard dashboards of the upstream prototype read them).
TRAIN_ALIASES = {"wm/total_loss": "train/wm_total_loss", "llm/sft_loss": "train/llm_sft_loss",
                 "llm/rl_loss": "train/llm_rft_loss"}
# Training episodes averaged by collect/return_last100 (the Jericho paper's metric); the window is checkpointed.
RETURN_WINDOW = 100


def architecture_fingerprint(cfg: EasyDict) -> str:
    """Hash of what decides tensor shapes; resuming with a different one is refused."""
    policy = cfg.policy
    model = {k: v for k, v in policy.model.items() if k != 'device'}
    if 'encoder' in model:  # how a batch is chunked and which kernels run decide no shape (old checkpoints lack both)
        model['encoder'] = {k: v for k, v in model['encoder'].items()
                            if k not in ('length_buckets', 'attention_kernels', 'packed_attention', 'deduplicate',
                                         'freeze')
                            and not (k == 'pretrained' and v is None)}  # checkpoints before the key stay valid
    return config_fingerprint(dict(model=model,
                                   llm_model=policy.llm.prior.model_path, use_lora=policy.llm.trainer.use_lora,
                                   llm_enabled=policy.llm.enable))


def env_label(cfg: EasyDict, create_cfg: EasyDict) -> str:
    """What the start-up line calls the env, without assuming any env-specific config key.

    The env class's optional ``describe(env_cfg) -> str`` hook comes first (an env knows what identifies a run of it,
    e.g. a game file); otherwise ``env.env_id`` (DI-engine's logging label), else the registered env type.
    """
    from ding.envs import get_env_cls

    env_cfg = cfg.get('env') or EasyDict()
    try:
        describe = getattr(get_env_cls(create_cfg.env), 'describe', None)
    except (KeyError, ImportError, AttributeError):  # an unregistered type still gets a label
        describe = None
    if callable(describe):
        return str(describe(env_cfg))
    return str(env_cfg.get('env_id') or create_cfg.env.get('type') or 'unknown env')


class HybridTrainer:
    """Builds every component from ``(main_config, create_config)`` and runs the loop."""

    def __init__(self, cfg: EasyDict, create_cfg: EasyDict, resume: str | None = None,
                 dist: DistContext | None = None) -> None:
        self.cfg, self.create_cfg = cfg, create_cfg
        self.dist = dist or DistContext()
        self.exp_dir = Path(cfg.exp_name)
        self.schedule = TrainSchedule(cfg.train)
        set_seed(cfg.seed)
        if self.dist.is_main:  # other ranks write nothing to the exp dir
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            self._save_run_info()
        self.metrics = MetricsLogger(self.exp_dir / "log") if self.dist.is_main else _NullMetrics()
        self.checkpoints = CheckpointManager(self.exp_dir / "checkpoints", self.schedule.cfg.keep_checkpoints)
        self.fingerprint = architecture_fingerprint(cfg)
        policy_cfg = EasyDict(dict(cfg.policy, type=create_cfg.policy.type, import_names=create_cfg.policy.import_names))
        self.policy = create_policy(policy_cfg, enable_field=['learn', 'collect', 'eval'])
        if self.dist.enabled:  # rank 0's weights everywhere, gradients averaged from now on
            self.policy.enable_data_parallel(self.dist)
        self.buffer = PriorZeroGameBuffer(cfg.policy.other.replay_buffer)
        if self.schedule.uses_phases and not (cfg.policy.llm.enable and cfg.policy.llm.train):
            raise ValueError(f"train.mode={self.schedule.cfg.mode!r} alternates world-model and LLM phases and needs "
                             f"policy.llm.enable=True and policy.llm.train=True; use train.mode='parallel'")
        self.collector = build_collection_backend(cfg, create_cfg, self.policy, partial(self._make_env, 'collector'))
        self.evaluator = PriorZeroEvaluator(cfg.policy.eval.evaluator, self._make_env('evaluator'),
                                            self.policy.eval_mode) if self.dist.is_main else None
        self.iteration = 0
        self._recent_returns: deque[float] = deque(maxlen=RETURN_WINDOW)
        self.wm_updates = 0  # world-model updates run (counters/wm_updates)
        self.llm_updates = 0  # LLM updates run (counters/llm_updates)
        self.last_eval: dict[str, float] = {}
        self._stop_requested = False
        self._consecutive_skips = 0
        if resume is not None:
            self._resume(resume)

    # ------------------------------------------------------------------ setup
    def _make_env(self, role: str):
        """The env manager of ``role`` ('collector' or 'evaluator'), seeded; the collection backend builds its own."""
        return make_env_manager(self.cfg, self.create_cfg, role)

    def _save_run_info(self) -> None:
        """Resolved config, git revision and package versions next to the logs (a run must explain itself)."""
        (self.exp_dir / "config.json").write_text(json.dumps(self.cfg, indent=2, default=str))
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = "unknown"
        import transformers

        info = dict(git_sha=sha, torch=torch.__version__, transformers=transformers.__version__,
                    optional=availability_summary())
        (self.exp_dir / "run_info.json").write_text(json.dumps(info, indent=2))

    def summary(self) -> str:
        p = self.cfg.policy
        avail = availability_summary()
        return (
            f"PriorZero | env={env_label(self.cfg, self.create_cfg)} | device={self.cfg.policy.device} | "
            f"LLM={p.llm.prior.model_path or 'tiny default'} backend={p.llm.prior.backend} "
            f"enabled={p.llm.enable} train={p.llm.train} | root prior={p.root_prior.mode} | "
            f"vLLM {'available' if avail['vllm'] else 'not installed'} | ORZ {'usable' if avail['orz'] else 'not usable'} | "
            f"exp={self.exp_dir}"
        )

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, float]:
        logger.info(self.summary())
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        start_iter = self.iteration
        bar = tqdm(total=self.schedule.cfg.max_iter, initial=start_iter, desc="priorzero", dynamic_ncols=True,
                   disable=not self.dist.is_main)
        try:
            while self.iteration < self.schedule.cfg.max_iter and not self._should_stop():
                metrics = self._iteration()
                bar.update(1)
                bar.set_postfix(self._postfix(metrics))
                if self.schedule.save(self.iteration):
                    self.save()
            if not self._stop_requested:
                self._evaluate()
            self.save()
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.last_eval

    def _request_stop(self, signum: int, _frame: Any) -> None:
        logger.warning("signal %d received: finishing this phase, then writing a final checkpoint", signum)
        self._stop_requested = True

    def _should_stop(self) -> bool:
        """A stop signal seen by any rank stops every rank at the same iteration boundary."""
        self._stop_requested = self.dist.any_true(self._stop_requested)
        return self._stop_requested

    def _iteration(self) -> dict[str, float]:
        it = self.iteration
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        if self.schedule.evaluate(it):
            self._evaluate()  # logged at the current env step by _evaluate itself
        plan = self.schedule.plan(it)
        if plan.collect:
            tic = time.perf_counter()
            segments = self.collector.collect(train_iter=it)
            self.buffer.push_game_segments(segments)
            metrics.update(self.collector.last_stats.metrics())
            self._recent_returns.extend(self.collector.last_stats.returns)
            if self._recent_returns:  # the Jericho paper's metric: mean return of the last 100 training episodes
                metrics['collect/return_last100'] = float(np.mean(self._recent_returns))
            metrics.update(self.policy.act_stats.pop_metrics())
            metrics['perf/collect_seconds'] = time.perf_counter() - tic
        metrics['buffer/transitions'] = float(self.buffer.get_num_of_transitions())
        if self.dist.all_true(self.buffer.get_num_of_transitions() >= self.schedule.cfg.min_buffer_transitions):
            metrics.update(self._train(plan))
        self.iteration += 1
        metrics['schedule/phase'] = float(PHASE_CODES[plan.phase])
        metrics['counters/wm_updates'] = float(self.wm_updates)
        metrics['counters/llm_updates'] = float(self.llm_updates)
        metrics['counters/env_steps'] = float(self.collector.envstep)  # this rank's
        if self.dist.enabled:
            metrics['counters/env_steps_all_ranks'] = self.dist.sum(self.collector.envstep)
        metrics['counters/iteration'] = float(self.iteration)
        metrics['llm/weights_version'] = float(self.policy.weights_version)
        metrics['perf/iteration_seconds'] = time.perf_counter() - start  # evaluation included, logging not
        self.metrics.log(metrics, self.collector.envstep)
        return metrics

    def _train(self, plan: IterationPlan) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if plan.train_world_model:
            tic = time.perf_counter()
            steps = [self._world_model_update() for _ in range(plan.wm_updates)]
            self.policy.after_training_burst()
            self.wm_updates += len(steps)
            metrics.update(_mean_metrics(steps))
            metrics['perf/wm_train_seconds'] = time.perf_counter() - tic
            metrics['perf/wm_train_steps_per_s'] = len(steps) / metrics['perf/wm_train_seconds']
        if self.cfg.policy.llm.enable and self.cfg.policy.llm.train and plan.train_llm:
            tic = time.perf_counter()
            steps = [self.policy.train_llm(self.buffer) for _ in range(plan.llm_updates)]
            self.llm_updates += len(steps)
            metrics.update(_mean_metrics(steps))
            samples = sum(s.get('llm/samples', 0.0) for s in steps)
            metrics['perf/llm_train_seconds'] = time.perf_counter() - tic
            metrics['perf/llm_train_samples_per_s'] = samples / metrics['perf/llm_train_seconds']
        if metrics:  # weights changed: acting copies (async / Ray backends) get them
            tic = time.perf_counter()
            self.collector.sync_weights()
            metrics['perf/sync_weights_seconds'] = time.perf_counter() - tic
        for source, alias in TRAIN_ALIASES.items():
            if source in metrics:
                metrics[alias] = metrics[source]
        return metrics

    def _world_model_update(self) -> dict[str, float]:
        """One update; a run whose losses stay non-finite stops instead of silently training on nothing."""
        metrics = self.policy.train_world_model(self.buffer)
        if 'wm/total_loss' in metrics:
            self._consecutive_skips = 0
            return metrics
        self._consecutive_skips += 1
        limit = self.schedule.cfg.max_consecutive_skipped_updates
        if self._consecutive_skips >= limit:
            raise RuntimeError(
                f"{limit} world-model updates in a row had a non-finite loss or gradient and were skipped; the run "
                f"is diverging. Lower policy.learn.wm.learning_rate or check the reward scale (last checkpoint: "
                f"{self.checkpoints.directory})"
            )
        return metrics

    def _evaluate(self) -> dict[str, float]:
        if self.evaluator is None:  # not rank 0
            return {}
        _, info = self.evaluator.eval(train_iter=self.iteration, envstep=self.collector.envstep)
        metrics = {k: v for k, v in info.items() if isinstance(v, float)}
        self.last_eval = metrics
        self.metrics.log(metrics, self.collector.envstep)
        return metrics

    def _postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        shown = {"eval": self.last_eval.get("evals/reward_mean"), "wm_loss": metrics.get("wm/total_loss"),
                 "llm_v": metrics.get("llm/weights_version"), "sps": metrics.get("perf/collect_env_steps_per_s"),
                 "steps": metrics.get("counters/env_steps")}
        return {k: f"{v:.3g}" for k, v in shown.items() if v is not None}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return dict(
            iteration=self.iteration,
            env_steps=self.collector.envstep,
            episodes=self.collector.total_episodes,
            wm_updates=self.wm_updates,
            llm_updates=self.llm_updates,
            policy=self.policy.learn_mode.state_dict(),
            policy_rngs=self.policy.rng_state(),
            rng=capture_rng_state(),
            buffer=self.buffer.state_dict() if self.schedule.cfg.save_buffer else None,
            last_eval=self.last_eval,
            # the last RETURN_WINDOW training returns, oldest first: collect/return_last100 continues after a resume
            recent_returns=[float(r) for r in self._recent_returns],
        )

    def save(self) -> Path | None:
        """Checkpoint (and export the LLM if configured); rank 0 only, the weights are the same on every rank."""
        if not self.dist.is_main:
            return None
        path = self.checkpoints.save(self.state_dict(), self.iteration, self.fingerprint)
        if self.schedule.cfg.export_llm and self.cfg.policy.llm.enable and self.cfg.policy.llm.train:
            self.policy.export_llm(self.exp_dir / "llm_hf")
        return path

    def _resume(self, resume: str) -> None:
        if resume == "auto":
            found = self.checkpoints.load_latest(self.fingerprint)
            if found is None:
                logger.info("--resume auto: no checkpoint in %s, starting fresh", self.checkpoints.directory)
                return
            state, path = found
        else:
            path = Path(resume)
            state = self.checkpoints.load(path, self.fingerprint)
        self.policy.learn_mode.load_state_dict(state['policy'])
        if self.dist.is_main:  # other ranks keep their own (seed + rank) streams: identical ones would collect duplicates
            self.policy.load_rng_state(state['policy_rngs'])
            restore_rng_state(state['rng'])
        if state['buffer'] is not None:
            self.buffer.load_state_dict(state['buffer'])
        self.iteration = int(state['iteration'])
        self.collector.envstep = int(state['env_steps'])
        self.collector.total_episodes = int(state['episodes'])
        self.last_eval = dict(state['last_eval'])
        self.wm_updates = int(state.get('wm_updates', 0))
        self.llm_updates = int(state.get('llm_updates', 0))
        self._restore_recent_returns(state, path)
        self.collector.sync_weights()  # acting copies start from the resumed weights
        logger.info("resumed from %s at iteration %d (%d env steps)", path, self.iteration, self.collector.envstep)

    def _restore_recent_returns(self, state: dict[str, Any], path: Path) -> None:
        """Refill the return window from the checkpoint; a checkpoint written before it was saved still loads."""
        self._recent_returns.clear()
        saved = state.get('recent_returns')
        if saved is None:
            logger.warning("checkpoint %s predates the saved training-return window: collect/return_last100 restarts "
                           "empty and averages only the episodes collected after this resume", path)
            return
        self._recent_returns.extend(float(r) for r in saved)  # a longer saved window keeps its newest entries

    def close(self) -> None:
        self.collector.close()
        if self.evaluator is not None:
            self.evaluator.close()
        self.metrics.close()


class _NullMetrics:
    """The metrics logger of ranks other than 0: they log nothing."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


def _mean_metrics(steps: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for s in steps for k in s}
    return {k: float(np.mean([s[k] for s in steps if k in s])) for k in keys}
