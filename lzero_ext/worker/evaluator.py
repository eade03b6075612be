"""PriorZero's evaluator: greedy episodes without noise; optionally the LLM-only and world-model-only ablations.

Modes: ``mcts`` (full PriorZero: mixed root prior + search, argmax of visits), ``llm_only`` (argmax of the LLM prior,
no search) and ``wm_only`` (search with the world model's prior only). Reported per mode: mean/max/std return, mean
score, victory rate and mean episode length; the policy's own eval mode (``policy.eval.mode``, default ``mcts``) is
reported under ``evals/``, the ablations under ``evals/<mode>/``. Registered as ``priorzero`` in SERIAL_EVALUATOR_REGISTRY so DI-engine's serial pipeline can use it.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from ding.utils import SERIAL_EVALUATOR_REGISTRY
from easydict import EasyDict

from lzero_ext.llm.types import Turn
from lzero_ext.utils.config import merge_strict
from lzero_ext.worker.env_recovery import step_envs

logger = logging.getLogger(__name__)

ABLATION_MODES = ('llm_only', 'wm_only')


@dataclass
class EpisodeResult:
    episode_return: float
    score: float
    victory: bool
    length: int


@dataclass
class EvalResult:
    mode: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    seconds: float = 0.0
    dropped_episodes: int = 0  # episodes whose env failed and was restarted (not counted, replayed)

    def metrics(self, prefix: str) -> dict[str, float]:
        returns = np.asarray([e.episode_return for e in self.episodes], dtype=np.float64)
        extra = {f'{prefix}dropped_episodes': float(self.dropped_episodes)} if self.dropped_episodes else {}
        return extra | {
            f'{prefix}reward_mean': float(returns.mean()),
            f'{prefix}reward_max': float(returns.max()),
            f'{prefix}reward_std': float(returns.std()),
            f'{prefix}score_mean': float(np.mean([e.score for e in self.episodes])),
            f'{prefix}victory_rate': float(np.mean([e.victory for e in self.episodes])),
            f'{prefix}episode_length_mean': float(np.mean([e.length for e in self.episodes])),
        }


@SERIAL_EVALUATOR_REGISTRY.register('priorzero')
class PriorZeroEvaluator:
    """Runs ``n_episode`` greedy episodes per mode on its own env manager."""

    config = dict(
        # (str) Registry name.
        type='priorzero',
        # (int) Evaluate every this many training iterations (0 = only when asked).
        eval_freq=10,
        # (int) Episodes per mode and evaluation.
        n_episode=2,
        # (bool) Also run the LLM-only and world-model-only ablations.
        ablations=False,
        # (list[float]) Also evaluate the full policy at these action temperatures (0 = most visited action,
        # > 0 = sampled from the visits, no noise), reported under evals/t<temperature>/; the headline evals/ uses
        # the policy's policy.eval.temperature.
        extra_temperatures=[],
        # (int) Past turns kept per env for the LLM prompt.
        history_length=4,
        # (int) An env that fails (crash, dead or hung worker; see worker/env_recovery.py) is restarted and its
        # episode replayed; after this many dropped episodes of one env with no finished episode between, the run
        # stops (a game that always fails would otherwise loop forever).
        max_dropped_episodes_in_a_row=3,
        # (float|None) Stop training (DI-engine serial pipeline) once the mean return reaches this; None: never.
        # (DI-engine's compile_config copies env.stop_value here.)
        stop_value=None,
        # (int) DI-engine serial pipeline: stop after this many train iterations (the pipeline's own bound is
        # only the CLI's --train-iter); the evaluator forces a final evaluation there and reports stop.
        max_train_iter=int(1e10),
        # DI-engine fills these in compile_config; accepted, unused.
        import_names=['lzero_ext.worker.evaluator'],
        cfg_type=None,
        figure_path=None,
        multi_gpu=False,
        render=dict(render_freq=-1, mode='train_iter'),
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: dict | None = None, env: Any = None, policy: Any = None, tb_logger: Any = None,
                 exp_name: str = 'default_experiment', instance_name: str = 'evaluator') -> None:
        self._cfg = merge_strict(self.default_config(), dict(cfg or {}), where='evaluator')
        for key, low in (('n_episode', 1), ('history_length', 0), ('max_dropped_episodes_in_a_row', 1)):
            if self._cfg[key] < low:
                raise ValueError(f"evaluator.{key} must be >= {low}, got {self._cfg[key]!r}")
        if any(float(t) < 0 for t in self._cfg.extra_temperatures):
            raise ValueError(f"evaluator.extra_temperatures must be >= 0, got {self._cfg.extra_temperatures!r}")
        self._env = env
        self._policy = policy
        self._tb_logger = tb_logger
        self._instance_name = instance_name
        self._last_eval_iter = -1
        self._launched = False

    def should_eval(self, train_iter: int) -> bool:
        if train_iter >= self._cfg.max_train_iter:
            return True
        freq = self._cfg.eval_freq
        if freq <= 0 or train_iter == self._last_eval_iter:
            return False
        return self._last_eval_iter < 0 or train_iter - self._last_eval_iter >= freq

    def run(self, mode: str | None = None, n_episode: int | None = None, temperature: float | None = None) -> EvalResult:
        """Play ``n_episode`` episodes (spread over the envs) in ``mode`` (None: the policy's eval mode), choosing
        actions at ``temperature`` (None: the policy's ``eval.temperature``)."""
        n_episode = self._cfg.n_episode if n_episode is None else n_episode
        if self._launched:
            self._env.reset()
        else:
            self._env.launch()
            self._launched = True
        self._policy.reset(None)
        result = EvalResult(mode=mode)
        start = time.perf_counter()
        histories: dict[int, list[Turn]] = {}
        returns: dict[int, float] = {}
        steps: dict[int, int] = {}
        dropped_in_a_row: dict[int, int] = {}
        started = min(n_episode, self._env.env_num)
        active = set(range(started))  # env ids whose current episode counts
        # Passed only when asked for, so policies without a temperature keyword (DI-engine test stubs) keep working.
        extra = {} if temperature is None else {'temperature': temperature}
        while active:
            ready = self._env.ready_obs
            env_ids = sorted(e for e in ready if e in active)
            outputs = self._policy.forward({e: ready[e] for e in env_ids},
                                           histories={e: histories.get(e, []) for e in env_ids}, eval_mode=mode,
                                           **extra)
            timesteps, failures = step_envs(self._env, {e: outputs[e].decision.action for e in env_ids})
            for env_id, error in failures.items():
                self._drop_episode(env_id, error, result, returns, steps, histories, dropped_in_a_row)
            for env_id, timestep in timesteps.items():
                if env_id not in active:
                    continue
                reward = float(np.asarray(timestep.reward).reshape(-1)[0])
                turn = Turn(observation=ready[env_id]['raw_obs_text'],
                            action=outputs[env_id].decision.executed_action, reward=reward)
                histories[env_id] = (histories.get(env_id, []) + [turn])[-self._cfg.history_length:]
                returns[env_id] = returns.get(env_id, 0.0) + reward
                steps[env_id] = steps.get(env_id, 0) + 1
                if timestep.done:
                    dropped_in_a_row[env_id] = 0
                    info = timestep.info
                    result.episodes.append(EpisodeResult(returns.pop(env_id), float(info.get('score', 0.0)),
                                                         bool(info.get('victory', False)), steps.pop(env_id)))
                    histories.pop(env_id, None)
                    self._policy.reset([env_id])
                    if started < n_episode:
                        started += 1
                    else:
                        active.discard(env_id)
        result.seconds = time.perf_counter() - start
        return result

    def _drop_episode(self, env_id: int, error: str, result: EvalResult, returns: dict[int, float],
                      steps: dict[int, int], histories: dict[int, list[Turn]], dropped_in_a_row: dict[int, int]) -> None:
        """The env failed and was restarted: its episode is not counted; the env's new episode takes its place."""
        returns.pop(env_id, None)
        steps.pop(env_id, None)
        histories.pop(env_id, None)
        self._policy.reset([env_id])
        result.dropped_episodes += 1
        dropped_in_a_row[env_id] = dropped_in_a_row.get(env_id, 0) + 1
        logger.warning("evaluator env %d failed and was restarted; its episode is dropped and replayed: %s",
                       env_id, error)
        limit = self._cfg.max_dropped_episodes_in_a_row
        if dropped_in_a_row[env_id] >= limit:
            raise RuntimeError(
                f"evaluator env {env_id} failed in {limit} episodes in a row (last error: {error}); the game or its worker "
                f"is broken. Check the story file and env settings, or raise "
                f"policy.eval.evaluator.max_dropped_episodes_in_a_row (env.manager.step_timeout: the hang limit)"
            )

    def eval(self, save_ckpt_fn: Callable | None = None, train_iter: int = -1, envstep: int = -1,
             n_episode: int | None = None) -> tuple[bool, dict[str, Any]]:
        """Evaluate (plus ablations if configured); returns ``(stop, info)`` as DI-engine's evaluators do."""
        self._last_eval_iter = train_iter
        runs = [(None, None, 'evals/')]
        runs += [(mode, None, f'evals/{mode}/') for mode in (ABLATION_MODES if self._cfg.ablations else ())]
        runs += [(None, float(t), f'evals/t{float(t):g}/') for t in self._cfg.extra_temperatures]
        metrics: dict[str, float] = {}
        main = None
        for mode, temperature, prefix in runs:
            result = self.run(mode, n_episode, temperature)
            metrics.update(result.metrics(prefix))
            main = main or result
        metrics['perf/eval_seconds'] = main.seconds
        if self._tb_logger is not None:
            for key, value in metrics.items():
                self._tb_logger.add_scalar(f'{self._instance_name}/{key}', value, train_iter)
        reached = self._cfg.stop_value is not None and metrics['evals/reward_mean'] >= self._cfg.stop_value
        stop = reached or train_iter >= self._cfg.max_train_iter
        if save_ckpt_fn is not None and stop:
            save_ckpt_fn('ckpt_final.pth.tar')
        info = dict(metrics)
        info['eval_episode_return'] = [e.episode_return for e in main.episodes]
        logger.info("eval @iter %d: %s", train_iter,
                    ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if k.startswith('evals/')))
        return stop, info

    def close(self) -> None:
        self._env.close()
