"""PriorZero's collector: N envs stepped in lockstep, one batched policy call (prior + search) per step.

Each step: gather every env's observation → one ``policy.forward`` (which makes ONE LLM prior call for all envs and
ONE batched search) → step all envs → append to each env's :class:`~lzero_ext.buffer.game_segment.SegmentBuilder`.
Completed (padded) segments are returned for the buffer; an episode that ends with ``info['truncated']`` (the step
limit) is stored as truncated, so its targets bootstrap from the last observation instead of 0. Episodes continue across ``collect`` calls, so long
text-game episodes are not cut by the collection budget.

Works with DI-engine's serial pipeline (registered as ``priorzero`` in SERIAL_COLLECTOR_REGISTRY): ``policy`` may be
the full :class:`~lzero_ext.policy.priorzero_policy.PriorZeroPolicy` or its ``collect_mode``.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ding.utils import SERIAL_COLLECTOR_REGISTRY
from easydict import EasyDict

from lzero_ext.buffer.game_segment import PriorZeroGameSegment, SegmentBuilder, StepObservation
from lzero_ext.llm.types import Turn
from lzero_ext.utils.config import merge_strict
from lzero_ext.worker.env_recovery import step_envs

logger = logging.getLogger(__name__)


@dataclass
class _EnvState:
    """Per-env bookkeeping between steps."""

    builder: SegmentBuilder
    history: deque  # of Turn: the last turns, for the LLM prompt
    observation: StepObservation | None = None
    episode_return: float = 0.0
    episode_steps: int = 0


@dataclass
class CollectStats:
    env_steps: int = 0
    episodes: int = 0
    seconds: float = 0.0
    policy_seconds: float = 0.0
    returns: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    dropped_episodes: int = 0
    extra: dict[str, float] = field(default_factory=dict)  # backend metrics (acting perf, staleness, waiting)

    def metrics(self) -> dict[str, float]:
        out = {
            'collect/env_steps': float(self.env_steps),
            'collect/episodes': float(self.episodes),
            'perf/collect_env_steps_per_s': self.env_steps / max(self.seconds, 1e-9),
            'perf/collect_policy_fraction': self.policy_seconds / max(self.seconds, 1e-9),
        }
        if self.returns:
            out['collect/episode_return_mean'] = float(np.mean(self.returns))
            out['collect/score_mean'] = float(np.mean(self.scores))
        if self.dropped_episodes:
            out['collect/dropped_episodes'] = float(self.dropped_episodes)
        out.update(self.extra)
        return out


@SERIAL_COLLECTOR_REGISTRY.register('priorzero')
class PriorZeroCollector:
    """Collects game segments with the PriorZero policy (see the module docstring)."""

    config = dict(
        # (str) Registry name.
        type='priorzero',
        # (int) Env steps (summed over envs) per ``collect`` call.
        n_steps=64,
        # (int) Steps of a game segment (its own steps; the next segment's first steps are padded on).
        segment_length=20,
        # (int) Padding copied from the next segment: num_unroll_steps + td_steps of the buffer.
        pad_length=15,
        # (int) Past turns kept per env for the LLM prompt (the prompt builder may show fewer).
        history_length=4,
        # (int) An env that fails (crash, dead or hung worker; see worker/env_recovery.py) is restarted and its
        # episode dropped; after this many dropped episodes of one env with no finished episode between, the run
        # stops (a game that always fails would otherwise loop forever).
        max_dropped_episodes_in_a_row=3,
        # DI-engine fills these in compile_config; accepted, unused.
        import_names=['lzero_ext.worker.collector'],
        cfg_type=None,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: dict | None = None, env: Any = None, policy: Any = None, tb_logger: Any = None,
                 exp_name: str = 'default_experiment', instance_name: str = 'collector') -> None:
        self._cfg = merge_strict(self.default_config(), dict(cfg or {}), where='collector')
        for key, low in (('n_steps', 1), ('segment_length', 1), ('pad_length', 0), ('history_length', 0),
                         ('max_dropped_episodes_in_a_row', 1)):
            if self._cfg[key] < low:
                raise ValueError(f"collector.{key} must be >= {low}, got {self._cfg[key]!r}")
        if self._cfg.pad_length > self._cfg.segment_length:
            raise ValueError(
                f"collector.segment_length={self._cfg.segment_length} must be >= pad_length={self._cfg.pad_length} "
                f"(= replay_buffer.num_unroll_steps + td_steps): raise segment_length or lower those two"
            )
        self._env = env
        self._policy = policy
        self._tb_logger = tb_logger
        self._exp_name, self._instance_name = exp_name, instance_name
        self.envstep = 0
        self.total_episodes = 0
        self._states: dict[int, _EnvState] = {}
        self._dropped_in_a_row: dict[int, int] = {}
        self._launched = False

    @property
    def num_envs(self) -> int:
        return self._env.env_num

    def reset(self) -> None:
        """Restart every env and drop unfinished segments (used after loading a checkpoint without a buffer)."""
        self._env.reset()
        self._policy.reset(None)
        self._states = {}
        self._launched = True

    def _state(self, env_id: int, observation: StepObservation) -> _EnvState:
        if env_id not in self._states:
            cfg = self._cfg
            action_space = len(observation.action_mask)
            self._states[env_id] = _EnvState(
                builder=SegmentBuilder(action_space, cfg.segment_length, cfg.pad_length, cfg.history_length),
                history=deque(maxlen=cfg.history_length),
            )
        return self._states[env_id]

    def collect(self, n_steps: int | None = None, train_iter: int = 0,
                policy_kwargs: dict | None = None) -> list[PriorZeroGameSegment]:
        """Step the envs for ``n_steps`` env steps (default ``cfg.n_steps``); return the completed segments."""
        if not self._launched:
            self._env.launch()
            self._launched = True
        budget = self._cfg.n_steps if n_steps is None else n_steps
        stats = CollectStats()
        segments: list[PriorZeroGameSegment] = []
        start = time.perf_counter()
        while stats.env_steps < budget:
            ready = self._env.ready_obs
            env_ids = sorted(ready)
            observations = {e: StepObservation.from_env_obs(ready[e]) for e in env_ids}
            for env_id in env_ids:
                state = self._state(env_id, observations[env_id])
                if state.observation is None:  # episode start
                    segments += state.builder.reset(observations[env_id])
                    self._policy.reset([env_id])
                state.observation = observations[env_id]
            tic = time.perf_counter()
            outputs = self._policy.forward(
                {e: ready[e] for e in env_ids},
                histories={e: list(self._states[e].history) for e in env_ids}, **(policy_kwargs or {}),
            )
            stats.policy_seconds += time.perf_counter() - tic
            timesteps, failures = step_envs(self._env, {e: outputs[e].decision.action for e in env_ids})
            for env_id, error in failures.items():
                self._drop_episode(env_id, error, stats)
            for env_id, timestep in timesteps.items():
                segments += self._record(env_id, outputs[env_id].decision, timestep, stats)
        stats.seconds = time.perf_counter() - start
        self.envstep += stats.env_steps
        self.total_episodes += stats.episodes
        self.last_stats = stats
        if self._tb_logger is not None:
            for key, value in stats.metrics().items():
                self._tb_logger.add_scalar(f'{self._instance_name}_iter/{key}', value, train_iter)
        return segments

    def _record(self, env_id: int, decision, timestep, stats: CollectStats) -> list[PriorZeroGameSegment]:
        state = self._states[env_id]
        info = timestep.info
        if info.get('abnormal', False):  # the env manager restarted a failed env: drop the episode
            self._drop_episode(env_id, "the env manager reported an abnormal timestep", stats)
            return []
        reward = float(np.asarray(timestep.reward).reshape(-1)[0])
        next_obs = StepObservation.from_env_obs(timestep.obs)
        state.history.append(Turn(observation=state.observation.raw_text, action=decision.executed_action,
                                  reward=reward))
        state.episode_return += reward
        state.episode_steps += 1
        stats.env_steps += 1
        # Gymnasium's convention (envs that set neither flag count as terminated, DI-engine's meaning of done):
        # a time-limit end keeps the value of the last observation in the targets.
        truncated = bool(timestep.done) and bool(info.get('truncated', False)) and not info.get('terminated', False)
        ready = state.builder.append(decision, reward, next_obs, bool(timestep.done), truncated)
        if timestep.done:
            self._dropped_in_a_row[env_id] = 0
            stats.episodes += 1
            stats.returns.append(state.episode_return)
            stats.scores.append(float(info.get('score', state.episode_return)))
            self._end_episode(env_id)
        return ready

    def _drop_episode(self, env_id: int, error: str, stats: CollectStats) -> None:
        """The env failed and was restarted: discard the episode's unfinished segments, count and log it.

        Segments of that episode completed before the fault (``segment_length`` steps each, already returned by an
        earlier step) are valid data and stay; the current segment and the one waiting for its padding are
        discarded, because their next observations would come from a different (restarted) game.
        """
        state = self._states.get(env_id)
        discarded = 0
        if state is not None:
            discarded = sum(s.num_steps for s in state.builder.flush())
            self._end_episode(env_id)
        stats.dropped_episodes += 1
        self._dropped_in_a_row[env_id] = self._dropped_in_a_row.get(env_id, 0) + 1
        logger.warning("collector env %d failed and was restarted; dropped its episode (%d unfinished steps "
                       "discarded): %s", env_id, discarded, error)
        limit = self._cfg.max_dropped_episodes_in_a_row
        if self._dropped_in_a_row[env_id] >= limit:
            raise RuntimeError(
                f"collector env {env_id} failed in {limit} episodes in a row (last error: {error}); the game or its "
                f"worker is broken. Check the story file and env settings, or raise "
                f"policy.collect.collector.max_dropped_episodes_in_a_row (env.manager.step_timeout: the hang limit)"
            )

    def _end_episode(self, env_id: int) -> None:
        state = self._states[env_id]
        state.observation = None
        state.history.clear()
        state.episode_return, state.episode_steps = 0.0, 0

    def sync_weights(self) -> None:
        """Collection-backend interface (``collect.backend='sync'``): a no-op, since acting uses the learner's own
        modules and every update is already what the next ``collect`` sees."""

    def close(self) -> None:
        self._env.close()
