"""PriorZero replay buffer: game segments in, aligned world-model windows and LLM samples out.

LightZero's game buffers live under ``lzero.mcts`` (they import the compiled tree), so this is our own. It keeps
UniZero's training protocol -- windows of ``num_unroll_steps`` steps, n-step value targets with ``td_steps``,
visit-distribution policy targets, ``mask_padding`` -- and adds the text the LLM learns from.

Sampling when the buffer holds fewer transitions than the batch: positions are drawn **with replacement** so the
batch keeps its requested size (LightZero raises instead; the reference PriorZero crashed here). With enough
transitions they are drawn without replacement. An empty buffer raises ``ValueError``.

Value targets: ``sum_{i<k} gamma^i r_{t+i} + gamma^k V(o_{t+k})`` with ``k = td_steps`` clipped at the end of the
available data; ``V`` is the stored MCTS root value by default, or the value a target model gives when a
``target_value_fn`` is passed. A terminal observation (victory, death) has value 0. An episode cut by the step limit
(``truncated``) is not terminal: the world model sees no step counter, so a 0 there would be noise it cannot
explain; its last observation is bootstrapped like data that stops mid-episode -- from the target network's value
of that observation, or, with stored root values (which exist only for observations with a decision), from the
last observation that has one.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from ding.utils import BUFFER_REGISTRY
from easydict import EasyDict

from lzero_ext.buffer.game_segment import PriorZeroGameSegment, candidate_position
from lzero_ext.llm.types import LLMSample, Turn
from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)


@dataclass
class BootstrapRequest:
    """Observation windows at the bootstrap positions ``min(t + j + td_steps, n)`` of each sampled window."""

    observations: np.ndarray  # [B, T, L] int64 token ids
    attention_masks: np.ndarray  # [B, T, L] bool
    actions: np.ndarray  # [B, T] int64, the actions taken at those observations (0 past the data)
    timesteps: np.ndarray  # [B, T] int64


TargetValueFn = Callable[[BootstrapRequest], np.ndarray]  # returns [B, T] scalar values


@dataclass
class WorldModelBatch:
    """Aligned training windows for UniZero (T = num_unroll_steps; observation ``j`` precedes action ``j``)."""

    observations: np.ndarray  # [B, T+1, L] int64 token ids o_t .. o_{t+T} (repeats the last one past the data)
    attention_masks: np.ndarray  # [B, T+1, L] bool
    action_masks: np.ndarray  # [B, T+1, A] int8
    timesteps: np.ndarray  # [B, T+1] int64 env timestep of each observation
    actions: np.ndarray  # [B, T] int64 (0 where mask_padding is False)
    rewards: np.ndarray  # [B, T] float32 reward of action j
    target_values: np.ndarray  # [B, T] float32 n-step value target of observation j
    target_policies: np.ndarray  # [B, T, A] float32 MCTS visit distribution at observation j
    mask_padding: np.ndarray  # [B, T] bool, True where step j is real data
    weights: np.ndarray  # [B] float32 importance weights (uniform sampling: ones)
    segment_ids: np.ndarray  # [B] int64 buffer-wide id of the sampled segment
    positions: np.ndarray  # [B] int64 start step inside that segment
    observation_texts: list[list[str]]  # [B][T+1] raw text of each observation
    executed_actions: list[list[str]]  # [B][T] action strings ('' where mask_padding is False)

    @property
    def batch_size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def unroll_steps(self) -> int:
        return int(self.actions.shape[1])


@dataclass
class AdvantageRequest:
    """What an advantage function needs for LLM samples at observation ``o_t`` (one row per sample)."""

    observations: np.ndarray  # [B, L] o_t
    attention_masks: np.ndarray  # [B, L]
    timesteps: np.ndarray  # [B]
    actions: np.ndarray  # [B] executed action index at o_t
    bootstrap_observations: np.ndarray  # [B, L] o_{t+k}
    bootstrap_attention_masks: np.ndarray  # [B, L]
    bootstrap_timesteps: np.ndarray  # [B]
    discounted_rewards: np.ndarray  # [B] sum_{i<k} gamma^i r_{t+i}
    bootstrap_discounts: np.ndarray  # [B] gamma^k, or 0 where o_{t+k} is terminal
    root_values: np.ndarray  # [B] MCTS root value at o_t
    default_advantages: np.ndarray  # [B] n-step target from root values minus the root value at o_t


AdvantageFn = Callable[[AdvantageRequest], np.ndarray]  # returns [B] advantages


@BUFFER_REGISTRY.register('game_buffer_priorzero')
class PriorZeroGameBuffer:
    """FIFO replay of :class:`PriorZeroGameSegment` with world-model and LLM sampling."""

    config = dict(
        # (str) Registry name of this buffer.
        type='game_buffer_priorzero',
        # (int) Maximum number of own transitions kept; the oldest whole segments are evicted first (FIFO).
        capacity_transitions=int(1e5),
        # (int) Number of discrete actions A.
        action_space_size=20,
        # (int) Unroll length T of world-model windows (UniZero num_unroll_steps).
        num_unroll_steps=10,
        # (int) n of the n-step value targets (UniZero td_steps).
        td_steps=5,
        # (float) Discount factor of rewards in value targets.
        discount_factor=0.997,
        # (int) Past turns (observation, action, reward) given to the LLM as history.
        history_length=5,
        # (bool) LLM samples come only from steps that carry a finite old prior log-prob (i.e. had an LLM prior).
        llm_require_prior=True,
        # (int) LLM samples are drawn in groups of up to this many steps at the same state (same observation text;
        # LLMSample.group_id names the state), so the trainer's advantage_normalization='group' compares actions
        # taken in one state, GRPO-style; 1 draws steps independently (groups then are mostly singletons).
        llm_group_size=1,
        # (int) Seed of the buffer's sampling RNG.
        seed=0,
        # DI-engine's create_config / compile_config fill these; accepted, unused.
        import_names=['lzero_ext.buffer.game_buffer'],
        cfg_type=None,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: Mapping[str, Any] | None = None, tb_logger: Any = None,
                 exp_name: str = 'default_experiment', instance_name: str = 'buffer') -> None:
        self._cfg = merge_strict(self.default_config(), cfg, where="replay_buffer")
        for key in ('num_unroll_steps', 'td_steps', 'capacity_transitions', 'action_space_size', 'llm_group_size'):
            if self._cfg[key] < 1:
                raise ValueError(f"replay_buffer.{key} must be >= 1, got {self._cfg[key]}")
        self._segments: list[PriorZeroGameSegment] = []
        self._segment_ids: list[int] = []
        self._next_segment_id = 0
        self._cum_steps = np.zeros(0, dtype=np.int64)
        self._rng = np.random.default_rng(self._cfg.seed)
        self._obs_len: int | None = None

    @property
    def cfg(self) -> EasyDict:
        return self._cfg

    # ------------------------------------------------------------------ filling
    def push_game_segments(self, segments: Sequence[PriorZeroGameSegment]) -> None:
        """Add finished segments (from :class:`~lzero_ext.buffer.game_segment.SegmentBuilder`), evicting FIFO."""
        for segment in segments:
            if segment.num_own_steps == 0:
                continue
            if segment.action_space_size != self._cfg.action_space_size:
                raise ValueError(
                    f"Segment action_space_size={segment.action_space_size} != buffer's {self._cfg.action_space_size}"
                )
            segment.finalize()
            obs_len = segment.arrays.tokens.shape[1]
            if self._obs_len is None:
                self._obs_len = obs_len
            elif obs_len != self._obs_len:
                raise ValueError(f"Segment observations have {obs_len} tokens, the buffer holds {self._obs_len}")
            self._segments.append(segment)
            self._segment_ids.append(self._next_segment_id)
            self._next_segment_id += 1
        self._evict()
        self._cum_steps = np.cumsum([s.num_own_steps for s in self._segments], dtype=np.int64)

    def _evict(self) -> None:
        total = sum(s.num_own_steps for s in self._segments)
        while len(self._segments) > 1 and total > self._cfg.capacity_transitions:
            total -= self._segments.pop(0).num_own_steps
            self._segment_ids.pop(0)

    # ------------------------------------------------------------------ DI-engine serial-pipeline interface
    def push(self, data: Sequence[PriorZeroGameSegment], cur_collector_envstep: int = -1) -> None:
        """DI-engine's ``push``: the collector's output is a list of finished segments."""
        self.push_game_segments(data)

    def sample(self, batch_size: int, train_iter: int = 0) -> "PriorZeroGameBuffer | None":
        """DI-engine's ``sample``: the learner samples aligned windows and LLM examples itself (it needs its target
        network for value targets), so this returns the buffer, or ``None`` while it is empty."""
        return self if self.get_num_of_transitions() > 0 else None

    def get_num_of_transitions(self) -> int:
        return int(self._cum_steps[-1]) if len(self._cum_steps) else 0

    def get_num_of_game_segments(self) -> int:
        return len(self._segments)

    def clear(self) -> None:
        self._segments, self._segment_ids = [], []
        self._cum_steps = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ sampling helpers
    def _sample_global_indices(self, batch_size: int, eligible: np.ndarray | None = None) -> np.ndarray:
        population = self.get_num_of_transitions() if eligible is None else len(eligible)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if population == 0:
            raise ValueError("Cannot sample from an empty replay buffer (no eligible transitions)")
        picks = self._rng.choice(population, size=batch_size, replace=population < batch_size)
        return picks if eligible is None else eligible[picks]

    def _locate(self, global_index: int) -> tuple[int, int]:
        segment_index = int(np.searchsorted(self._cum_steps, global_index, side='right'))
        start = int(self._cum_steps[segment_index - 1]) if segment_index > 0 else 0
        return segment_index, int(global_index) - start

    # ------------------------------------------------------------------ world model
    def sample_world_model_batch(
        self, batch_size: int, target_value_fn: TargetValueFn | None = None
    ) -> WorldModelBatch:
        """Sample ``batch_size`` aligned windows; value targets bootstrap from ``target_value_fn`` when given."""
        T, td = self._cfg.num_unroll_steps, self._cfg.td_steps
        located = [self._locate(i) for i in self._sample_global_indices(batch_size)]
        rows = [self._window(self._segments[s], p, T) for s, p in located]
        model_values = None
        if target_value_fn is not None:
            request = BootstrapRequest(
                *(np.stack(x) for x in zip(*(self._bootstrap_window(self._segments[s], p, T, td) for s, p in located)))
            )
            model_values = np.asarray(target_value_fn(request), dtype=np.float32)
            if model_values.shape != (batch_size, T):
                raise ValueError(f"target_value_fn returned shape {model_values.shape}, expected {(batch_size, T)}")
        target_values = np.stack([
            n_step_value_targets(
                self._segments[s], p, T, td, self._cfg.discount_factor,
                None if model_values is None else model_values[b],
            )
            for b, (s, p) in enumerate(located)
        ])
        fields = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ('texts', 'executed')}
        return WorldModelBatch(
            target_values=target_values.astype(np.float32),
            weights=np.ones(batch_size, dtype=np.float32),
            segment_ids=np.asarray([self._segment_ids[s] for s, _ in located], dtype=np.int64),
            positions=np.asarray([p for _, p in located], dtype=np.int64),
            observation_texts=[r['texts'] for r in rows],
            executed_actions=[r['executed'] for r in rows],
            **fields,
        )

    @staticmethod
    def _window(segment: PriorZeroGameSegment, start: int, T: int) -> dict[str, Any]:
        arrays, text, n = segment.arrays, segment.text, segment.num_steps
        obs_index = np.minimum(start + np.arange(T + 1), n)
        steps = start + np.arange(T)
        valid = steps < n
        step_index = np.minimum(steps, n - 1)
        return dict(
            observations=arrays.tokens[obs_index].astype(np.int64),
            attention_masks=arrays.attention_mask[obs_index],
            action_masks=arrays.action_mask[obs_index],
            timesteps=arrays.timesteps[obs_index],
            actions=np.where(valid, arrays.actions[step_index], 0),
            rewards=np.where(valid, arrays.rewards[step_index], 0.0).astype(np.float32),
            target_policies=arrays.visit_distributions[step_index] * valid[:, None],
            mask_padding=valid,
            texts=[text.raw_texts[i] for i in obs_index],
            executed=[text.executed_actions[i] if v else '' for i, v in zip(step_index, valid)],
        )

    @staticmethod
    def _bootstrap_window(
        segment: PriorZeroGameSegment, start: int, T: int, td: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        arrays, n = segment.arrays, segment.num_steps
        index = np.minimum(start + np.arange(T) + td, n)
        actions = np.where(index < n, arrays.actions[np.minimum(index, n - 1)], 0)
        return arrays.tokens[index].astype(np.int64), arrays.attention_mask[index], actions, arrays.timesteps[index]

    # ------------------------------------------------------------------ LLM
    def sample_llm_batch(self, batch_size: int, advantage_fn: AdvantageFn | None = None) -> list[LLMSample]:
        """Sample LLM training examples at single steps (history, observation, candidates, visits, action, ...).

        The advantage defaults to the n-step target (bootstrapped from stored root values) minus the root value;
        pass ``advantage_fn`` to compute it from a (target) world model instead.
        """
        eligible = self._llm_eligible_indices() if self._cfg.llm_require_prior else None
        if self._cfg.llm_group_size > 1:
            picks = self._sample_state_groups(batch_size, eligible)
        else:
            picks = self._sample_global_indices(batch_size, eligible)
        located = [self._locate(i) for i in picks]
        request = self._advantage_request(located)
        advantages = request.default_advantages
        if advantage_fn is not None:
            advantages = np.asarray(advantage_fn(request), dtype=np.float32)
            if advantages.shape != (len(located),):
                raise ValueError(f"advantage_fn returned shape {advantages.shape}, expected {(len(located),)}")
        return [self._llm_sample(self._segments[s], p, float(a)) for (s, p), a in zip(located, advantages)]

    def _state_keys(self) -> np.ndarray:
        """State key (CRC-32 of the observation text) of every own step in the buffer, in global-index order."""
        keys = [segment.own_state_keys() for segment in self._segments]
        return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)

    def _sample_state_groups(self, batch_size: int, eligible: np.ndarray | None) -> np.ndarray:
        """``batch_size`` global indices in groups of up to ``llm_group_size`` steps at the same state: an anchor
        step drawn uniformly, then other steps with its state key drawn without replacement."""
        population = np.arange(self.get_num_of_transitions()) if eligible is None else eligible
        if len(population) == 0:
            raise ValueError("Cannot sample from an empty replay buffer (no eligible transitions)")
        keys = self._state_keys()[population]
        picks: list[int] = []
        while len(picks) < batch_size:
            anchor = int(self._rng.integers(len(population)))
            same = np.flatnonzero(keys == keys[anchor])
            others = same[same != anchor]
            size = min(self._cfg.llm_group_size - 1, len(others), batch_size - len(picks) - 1)
            extra = self._rng.choice(others, size=size, replace=False) if size > 0 else []
            picks += [int(population[anchor])] + [int(population[i]) for i in extra]
        return np.asarray(picks, dtype=np.int64)

    def _llm_eligible_indices(self) -> np.ndarray:
        finite = [np.isfinite(s.arrays.old_prior_logprobs[:s.num_own_steps]) for s in self._segments]
        return np.flatnonzero(np.concatenate(finite)) if finite else np.zeros(0, dtype=np.int64)

    def _advantage_request(self, located: list[tuple[int, int]]) -> AdvantageRequest:
        td, gamma = self._cfg.td_steps, self._cfg.discount_factor
        cols: dict[str, list] = {k: [] for k in AdvantageRequest.__dataclass_fields__}
        for s, t in located:
            segment = self._segments[s]
            arrays, n = segment.arrays, segment.num_steps
            b = min(t + td, n)
            k = b - t
            cols['observations'].append(arrays.tokens[t].astype(np.int64))
            cols['attention_masks'].append(arrays.attention_mask[t])
            cols['timesteps'].append(arrays.timesteps[t])
            cols['actions'].append(arrays.actions[t])
            cols['bootstrap_observations'].append(arrays.tokens[b].astype(np.int64))
            cols['bootstrap_attention_masks'].append(arrays.attention_mask[b])
            cols['bootstrap_timesteps'].append(arrays.timesteps[b])
            cols['discounted_rewards'].append(float(np.sum(arrays.rewards[t:b] * gamma ** np.arange(k))))
            cols['bootstrap_discounts'].append(0.0 if (b == n and segment.terminal) else gamma ** k)
            cols['root_values'].append(arrays.root_values[t])
            target = n_step_value_targets(segment, t, 1, td, gamma, None)[0]
            cols['default_advantages'].append(target - arrays.root_values[t])
        return AdvantageRequest(**{k: np.asarray(v, dtype=np.float32 if k in _FLOAT_FIELDS else None)
                                   for k, v in cols.items()})

    def _llm_sample(self, segment: PriorZeroGameSegment, t: int, advantage: float) -> LLMSample:
        text, arrays = segment.text, segment.arrays
        candidates, indices = list(text.valid_actions[t]), text.action_indices[t]
        if not candidates:
            # The env executes a fallback action (e.g. 'go') when there are no valid actions; it is the only choice.
            candidates, indices = [text.executed_actions[t]], np.asarray([arrays.actions[t]])
        position = candidate_position(indices, int(arrays.actions[t]))
        if position is None:
            raise ValueError(f"Stored action {int(arrays.actions[t])} is none of the step's action indices "
                             f"{indices.tolist()} (valid actions {candidates})")
        observations, actions, rewards = segment.history_before(t, self._cfg.history_length)
        return LLMSample(
            history=[Turn(observation=o, action=a, reward=r) for o, a, r in zip(observations, actions, rewards)],
            observation=text.raw_texts[t],
            candidates=candidates,
            visit_distribution=arrays.visit_distributions[t, indices].copy(),
            action_index=position,
            advantage=advantage,
            old_prior_logprob=float(arrays.old_prior_logprobs[t]),
            group_id=int(segment.own_state_keys()[t]),  # the key the grouped sampler used, computed once
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return dict(
            config=dict(self._cfg),
            segments=[s.state_dict() for s in self._segments],
            segment_ids=list(self._segment_ids),
            next_segment_id=self._next_segment_id,
            obs_len=self._obs_len,
            rng_state=copy.deepcopy(self._rng.bit_generator.state),
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if dict(state['config']) != dict(self._cfg):
            logger.warning("Loading a replay buffer saved with a different config; keeping the current config")
        self._segments = [PriorZeroGameSegment.from_state_dict(s) for s in state['segments']]
        self._segment_ids = list(state['segment_ids'])
        self._next_segment_id = int(state['next_segment_id'])
        self._obs_len = state['obs_len']
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = copy.deepcopy(state['rng_state'])
        self._evict()
        self._cum_steps = np.cumsum([s.num_own_steps for s in self._segments], dtype=np.int64)


_FLOAT_FIELDS = {'discounted_rewards', 'bootstrap_discounts', 'root_values', 'default_advantages'}


def n_step_value_targets(
    segment: PriorZeroGameSegment,
    start: int,
    horizon: int,
    td_steps: int,
    discount: float,
    model_values: np.ndarray | None,
) -> np.ndarray:
    """n-step value targets ``[horizon]`` for steps ``start .. start+horizon-1`` of a finalised segment.

    ``model_values[j]``, when given, is the value of observation ``min(start + j + td_steps, n)``; otherwise stored
    root values are used. Steps past the data get 0 (they are masked in the loss).
    """
    arrays, n = segment.arrays, segment.num_steps
    targets = np.zeros(horizon, dtype=np.float64)
    for j in range(horizon):
        t = start + j
        if t >= n:
            break
        if model_values is None:
            last = n if segment.terminal else n - 1  # root values exist for steps < n only
            b = min(t + td_steps, last)
            bootstrap = 0.0 if b >= n else float(arrays.root_values[b])
        else:
            b = min(t + td_steps, n)
            bootstrap = 0.0 if (b == n and segment.terminal) else float(model_values[j])
        k = b - t
        rewards = arrays.rewards[t:b].astype(np.float64)
        targets[j] = float(np.sum(rewards * discount ** np.arange(k))) + discount ** k * bootstrap
    return targets
