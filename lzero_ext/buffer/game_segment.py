"""Game segments: fixed-length slices of an episode with everything the world model and the LLM learn from.

Alignment convention (one index per *decision step* ``t``, no off-by-one between text and tensors):

* ``observation t`` (:class:`StepObservation`): what the agent saw before acting at step ``t`` -- token ids,
  attention mask, action mask, raw text, the valid action strings and their action indices (discrete action
  ``action_indices[k]`` means ``valid_actions[k]``), timestep, to_play.
* ``decision t`` (:class:`StepDecision`): what was decided at observation ``t`` -- executed action index and string,
  MCTS visit distribution and root value, the LLM prior over ``valid_actions`` with its weights version and the
  log-prob of the executed action under that prior at collection time (``old_prior_logprob``; actions come from the
  visit counts, not from the prior, so this is no behaviour-policy probability).
* ``reward t``: the reward received for executing action ``t``.

A segment with ``n`` steps therefore holds ``n + 1`` observations (the last one is the observation after the last
action). Segments hold ``segment_length`` steps of their own; when full, the next segment starts from the last
observation, and once it has ``pad_length = num_unroll_steps + td_steps`` steps (or the episode ends) its first
steps are copied onto the end of the previous segment (``pad_over``), like LightZero's ``GameSegment.pad_over``.
So a training window that starts near the end of a segment still sees the true next observations, actions, visit
targets and rewards, and its n-step value targets bootstrap from the true future.

Episode ends: ``ends_episode`` says nothing follows the last observation; ``truncated`` says the episode was cut
by the step limit while the game went on (Gymnasium's ``truncated``), so the last observation -- always stored,
the ``n + 1``-th -- keeps its value for bootstrapping; ``terminal`` (ended and not truncated) means value 0 there.

Text is stored as text (raw observation strings, action strings); per-candidate prompt token ids are never stored
(the reference implementation ran out of memory that way).
"""
from __future__ import annotations

import copy
import logging
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class StepObservation:
    """One environment observation as the world model and the LLM prior consume it."""

    tokens: np.ndarray  # [L] int token ids
    attention_mask: np.ndarray  # [L] 1 for real tokens
    action_mask: np.ndarray  # [A] int8, 1 for legal action indices
    raw_text: str
    valid_actions: list[str]  # candidate strings, in the order the LLM prior scores them
    timestep: int
    to_play: int = -1
    action_indices: np.ndarray | None = None  # [len(valid_actions)] discrete action of each; None: 0, 1, 2, ...

    def __post_init__(self) -> None:
        if self.action_indices is None:
            self.action_indices = np.arange(len(self.valid_actions), dtype=np.int64)
        self.action_indices = np.asarray(self.action_indices, dtype=np.int64)
        if len(self.action_indices) != len(self.valid_actions):
            raise ValueError(f"{len(self.action_indices)} action indices for {len(self.valid_actions)} valid actions")

    def candidate_position(self, action: int) -> int | None:
        """Position in ``valid_actions`` of discrete ``action``; None when it is none of them."""
        return candidate_position(self.action_indices, action)

    @classmethod
    def from_env_obs(cls, obs: Mapping[str, Any]) -> "StepObservation":
        """Build from the env's obs dict (keys observation, attention_mask, action_mask, raw_obs_text, ...)."""
        missing = [k for k in ("observation", "attention_mask", "action_mask", "raw_obs_text", "valid_actions",
                               "timestep") if k not in obs]
        if missing:
            raise KeyError(f"Env observation lacks key(s) {missing}; got keys {sorted(obs.keys())}")
        return cls(
            tokens=np.asarray(obs["observation"]),
            attention_mask=np.asarray(obs["attention_mask"]),
            action_mask=np.asarray(obs["action_mask"], dtype=np.int8),
            raw_text=str(obs["raw_obs_text"]),
            valid_actions=list(obs["valid_actions"]),
            timestep=int(obs["timestep"]),
            to_play=int(obs.get("to_play", -1)),
            action_indices=obs.get("action_indices"),
        )


@dataclass
class StepDecision:
    """What the agent decided at one observation (search result, prior and the executed action)."""

    action: int
    executed_action: str
    visit_distribution: np.ndarray  # [A] MCTS visit counts or frequencies (normalised on storage), policy target
    root_value: float
    prior_logprobs: np.ndarray | None = None  # [len(valid_actions)] LLM prior over the candidates, in their order
    prior_version: int = -1  # weights version of the LLM that produced prior_logprobs (-1: no prior)
    old_prior_logprob: float = float("nan")  # log-prob of the executed action under the prior at collection time


@dataclass
class _SegmentArrays:
    """Numeric per-step arrays of a finalised segment (index = step; observations have one more row)."""

    tokens: np.ndarray  # [n+1, L]
    attention_mask: np.ndarray  # [n+1, L] bool
    action_mask: np.ndarray  # [n+1, A] int8
    timesteps: np.ndarray  # [n+1] int64
    to_play: np.ndarray  # [n+1] int64
    actions: np.ndarray  # [n] int64
    rewards: np.ndarray  # [n] float32
    visit_distributions: np.ndarray  # [n, A] float32
    root_values: np.ndarray  # [n] float32
    old_prior_logprobs: np.ndarray  # [n] float32
    prior_versions: np.ndarray  # [n] int64


@dataclass
class _SegmentText:
    """Text per step of a finalised segment (observations have one more entry than the step lists)."""

    raw_texts: list[str]  # [n+1]
    valid_actions: list[list[str]]  # [n+1]
    executed_actions: list[str]  # [n]
    prior_logprobs: list[np.ndarray | None]  # [n]
    action_indices: list[np.ndarray] | None = None  # [n+1] discrete action of each valid action; None: 0, 1, 2, ...

    def __post_init__(self) -> None:
        if self.action_indices is None:  # checkpoints written before action indices were stored
            self.action_indices = [np.arange(len(v), dtype=np.int64) for v in self.valid_actions]


@dataclass
class HistoryPrefix:
    """The episode's turns before a segment's first observation, so LLM prompts keep history across segments."""

    observations: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)


class PriorZeroGameSegment:
    """A slice of one episode: ``num_own_steps`` steps of its own plus up to ``pad_length`` steps of the next."""

    def __init__(self, action_space_size: int, segment_length: int, pad_length: int) -> None:
        if segment_length < 1 or pad_length < 0:
            raise ValueError(f"segment_length must be >= 1 and pad_length >= 0, got {segment_length}, {pad_length}")
        self.action_space_size = action_space_size
        self.segment_length = segment_length
        self.pad_length = pad_length
        self.observations: list[StepObservation] = []
        self.decisions: list[StepDecision] = []
        self.rewards: list[float] = []
        self.history_prefix = HistoryPrefix()
        self.num_own_steps = 0
        self.ends_episode = False  # True when the episode ends at the last observation (nothing follows it)
        self.truncated = False  # ... and it ended on the step limit: the last observation still has a value
        self.arrays: _SegmentArrays | None = None
        self.text: _SegmentText | None = None
        self._state_keys: np.ndarray | None = None  # cache of own_state_keys()

    # ------------------------------------------------------------------ building
    def reset(self, first_observation: StepObservation, history_prefix: HistoryPrefix | None = None) -> None:
        self.observations = [first_observation]
        self.decisions, self.rewards = [], []
        self.history_prefix = history_prefix or HistoryPrefix()
        self.num_own_steps, self.ends_episode, self.truncated, self.arrays, self.text = 0, False, False, None, None

    def append(self, decision: StepDecision, reward: float | np.ndarray, next_observation: StepObservation) -> None:
        """Record decision ``t`` at the current last observation, its reward, and observation ``t+1``."""
        self._check_mutable()
        if not self.observations:
            raise RuntimeError("PriorZeroGameSegment.append called before reset()")
        if self.is_full():
            raise RuntimeError(f"Segment already holds segment_length={self.segment_length} steps")
        self._check_decision(decision)
        self.decisions.append(decision)
        self.rewards.append(_scalar_reward(reward))
        self.observations.append(next_observation)
        self.num_own_steps += 1

    def is_full(self) -> bool:
        return self.num_own_steps >= self.segment_length

    def mark_episode_end(self, truncated: bool = False) -> None:
        """The episode ends at the last observation: terminated (value 0 beyond it) or ``truncated`` (step limit)."""
        self.ends_episode = True
        self.truncated = truncated

    @property
    def terminal(self) -> bool:
        """The last observation is terminal: value targets bootstrap 0 there (a truncated end bootstraps its value)."""
        return self.ends_episode and not self.truncated

    def pad_over(self, next_segment: "PriorZeroGameSegment") -> None:
        """Append the first ``pad_length`` steps of the following segment of the same episode."""
        self._check_mutable()
        if len(self.decisions) != self.num_own_steps:
            raise RuntimeError("pad_over called twice on the same segment")
        boundary, first_next = self.observations[-1], next_segment.observations[0]
        if boundary.raw_text != first_next.raw_text or not np.array_equal(boundary.tokens, first_next.tokens):
            raise ValueError("pad_over: the next segment does not start at this segment's last observation")
        steps = min(self.pad_length, len(next_segment.decisions))
        self.decisions.extend(next_segment.decisions[:steps])
        self.rewards.extend(next_segment.rewards[:steps])
        self.observations.extend(next_segment.observations[1:steps + 1])
        self.ends_episode = next_segment.ends_episode and steps == len(next_segment.decisions)
        self.truncated = self.ends_episode and next_segment.truncated

    def next_history_prefix(self, max_turns: int) -> HistoryPrefix:
        """History to hand to the segment that continues this one (last ``max_turns`` turns of the episode)."""
        own = slice(0, self.num_own_steps)
        observations = self.history_prefix.observations + [o.raw_text for o in self.observations[own]]
        actions = self.history_prefix.actions + [d.executed_action for d in self.decisions[own]]
        rewards = self.history_prefix.rewards + self.rewards[own]
        start = max(0, len(actions) - max_turns)
        return HistoryPrefix(observations[start:], actions[start:], rewards[start:])

    def finalize(self) -> None:
        """Freeze the segment and build its numeric arrays (called when it enters the buffer)."""
        if self.arrays is not None:
            return
        if not self.decisions:
            raise ValueError("Cannot finalize a segment without steps")
        obs, dec = self.observations, self.decisions
        self.arrays = _SegmentArrays(
            tokens=np.stack([o.tokens for o in obs]).astype(_token_dtype(obs)),
            attention_mask=np.stack([o.attention_mask for o in obs]).astype(bool),
            action_mask=np.stack([o.action_mask for o in obs]).astype(np.int8),
            timesteps=np.asarray([o.timestep for o in obs], dtype=np.int64),
            to_play=np.asarray([o.to_play for o in obs], dtype=np.int64),
            actions=np.asarray([d.action for d in dec], dtype=np.int64),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            visit_distributions=np.stack([_normalised(d.visit_distribution) for d in dec]),
            root_values=np.asarray([d.root_value for d in dec], dtype=np.float32),
            old_prior_logprobs=np.asarray([d.old_prior_logprob for d in dec], dtype=np.float32),
            prior_versions=np.asarray([d.prior_version for d in dec], dtype=np.int64),
        )
        self.text = _SegmentText(
            raw_texts=[o.raw_text for o in obs],
            valid_actions=[list(o.valid_actions) for o in obs],
            action_indices=[o.action_indices.copy() for o in obs],
            executed_actions=[d.executed_action for d in dec],
            prior_logprobs=[None if d.prior_logprobs is None else np.asarray(d.prior_logprobs, np.float32)
                            for d in dec],
        )
        # Arrays and text now hold everything; drop the per-step objects (the token arrays would double memory,
        # and the boundary observation objects are shared with the neighbouring segment).
        self.observations, self.decisions, self.rewards = [], [], []

    # ------------------------------------------------------------------ reading
    @property
    def num_steps(self) -> int:
        """Steps with data (own + padded)."""
        return len(self.arrays.actions) if self.arrays is not None else len(self.decisions)

    def __len__(self) -> int:
        return self.num_steps

    def own_state_keys(self) -> np.ndarray:
        """:func:`state_key` of the observation at each own step (finalised segments; computed once)."""
        if self.text is None:
            raise RuntimeError("own_state_keys needs a finalized segment")
        if self._state_keys is None:
            self._state_keys = np.asarray([state_key(t) for t in self.text.raw_texts[:self.num_own_steps]],
                                          dtype=np.int64)
        return self._state_keys

    def history_before(self, step: int, max_turns: int) -> tuple[list[str], list[str], list[float]]:
        """(observation texts, action strings, rewards) of up to ``max_turns`` turns before ``step`` (finalised)."""
        if self.text is None or self.arrays is None:
            raise RuntimeError("history_before needs a finalized segment")
        observations = self.history_prefix.observations + self.text.raw_texts[:step]
        actions = self.history_prefix.actions + self.text.executed_actions[:step]
        rewards = self.history_prefix.rewards + [float(r) for r in self.arrays.rewards[:step]]
        start = max(0, len(actions) - max_turns) if max_turns > 0 else len(actions)
        return observations[start:], actions[start:], rewards[start:]

    def state_dict(self) -> dict[str, Any]:
        """Plain containers (dicts, lists, numpy arrays, str) of a finalised segment, for checkpoints."""
        if self.arrays is None or self.text is None:
            raise RuntimeError("Only finalized segments (those in the buffer) can be saved")
        return dict(  # asdict deep-copies the fields
            action_space_size=self.action_space_size,
            segment_length=self.segment_length,
            pad_length=self.pad_length,
            num_own_steps=self.num_own_steps,
            ends_episode=self.ends_episode,
            truncated=self.truncated,
            history_prefix=asdict(self.history_prefix),
            arrays=asdict(self.arrays),
            text=asdict(self.text),
        )

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "PriorZeroGameSegment":
        state = copy.deepcopy(dict(state))
        segment = cls(state['action_space_size'], state['segment_length'], state['pad_length'])
        segment.num_own_steps = int(state['num_own_steps'])
        segment.ends_episode = bool(state['ends_episode'])
        segment.truncated = bool(state.get('truncated', False))  # checkpoints from before the flag: terminated
        segment.history_prefix = HistoryPrefix(**state['history_prefix'])
        arrays = dict(state['arrays'])
        if 'behaviour_logprobs' in arrays:  # checkpoints written before the rename to old_prior_logprobs
            arrays['old_prior_logprobs'] = arrays.pop('behaviour_logprobs')
        segment.arrays = _SegmentArrays(**arrays)
        segment.text = _SegmentText(**state['text'])
        return segment

    # ------------------------------------------------------------------ checks
    def _check_mutable(self) -> None:
        if self.arrays is not None:
            raise RuntimeError("Segment is finalized (already in the buffer) and cannot change")

    def _check_decision(self, decision: StepDecision) -> None:
        if not 0 <= decision.action < self.action_space_size:
            raise ValueError(f"Action {decision.action} outside [0, {self.action_space_size})")
        if np.shape(decision.visit_distribution) != (self.action_space_size,):
            raise ValueError(
                f"visit_distribution must have shape ({self.action_space_size},), "
                f"got {np.shape(decision.visit_distribution)}"
            )


def candidate_position(action_indices: np.ndarray, action: int) -> int | None:
    """Position of discrete ``action`` in a state's ``action_indices``; None when it is not among them."""
    hits = np.flatnonzero(np.asarray(action_indices) == action)
    return int(hits[0]) if len(hits) else None


def state_key(observation_text: str) -> int:
    """Id of a state for grouping LLM samples: steps whose observation text is the same share it (in a
    deterministic text game the response with look and inventory identifies the state well enough)."""
    return zlib.crc32(observation_text.encode('utf-8'))


def _scalar_reward(reward: float | np.ndarray) -> float:
    """DI-engine envs return rewards as 1-element arrays; store a plain float."""
    array = np.asarray(reward, dtype=np.float64)
    if array.size != 1:
        raise ValueError(f"reward must be a scalar or a 1-element array, got shape {array.shape}")
    return float(array.reshape(()))


def _normalised(visits: np.ndarray) -> np.ndarray:
    """Visit counts or frequencies as a distribution (all-zero stays zero: no policy target for that step)."""
    visits = np.asarray(visits, dtype=np.float32)
    total = float(visits.sum())
    if total < 0 or not np.isfinite(total) or (visits < 0).any():
        raise ValueError(f"visit_distribution must be finite and non-negative, got {visits}")
    return visits / total if total > 0 else visits


def _token_dtype(observations: list[StepObservation]) -> type:
    """Smallest integer dtype holding every token id, to keep long text observations cheap in the buffer."""
    top = max(int(np.max(o.tokens)) if o.tokens.size else 0 for o in observations)
    return np.int32 if top < 2 ** 31 else np.int64


class SegmentBuilder:
    """Cuts one environment's stream of steps into padded segments ready for the buffer.

    The collector keeps one builder per env: ``reset`` at episode start, ``append`` after every env step; each
    call returns the segments that became complete (padded with the following steps, or ending the episode).
    """

    def __init__(self, action_space_size: int, segment_length: int, pad_length: int, history_length: int) -> None:
        if pad_length > segment_length:
            raise ValueError(
                f"pad_length={pad_length} (num_unroll_steps + td_steps) must not exceed segment_length={segment_length}"
            )
        self.action_space_size = action_space_size
        self.segment_length = segment_length
        self.pad_length = pad_length
        self.history_length = history_length
        self._current: PriorZeroGameSegment | None = None
        self._pending: PriorZeroGameSegment | None = None

    def _new_segment(self, first: StepObservation, prefix: HistoryPrefix | None) -> PriorZeroGameSegment:
        segment = PriorZeroGameSegment(self.action_space_size, self.segment_length, self.pad_length)
        segment.reset(first, prefix)
        return segment

    def reset(self, first_observation: StepObservation) -> list[PriorZeroGameSegment]:
        """Start a new episode; returns any unfinished segments of the previous one (see :meth:`flush`)."""
        leftovers = self.flush()
        self._current = self._new_segment(first_observation, None)
        return leftovers

    def append(
        self, decision: StepDecision, reward: float | np.ndarray, next_observation: StepObservation, done: bool,
        truncated: bool = False,
    ) -> list[PriorZeroGameSegment]:
        """``done``: the episode ended with this step; ``truncated``: it ended on the step limit (the game goes on
        beyond ``next_observation``, whose value the learner bootstraps from), else it terminated."""
        if self._current is None:
            raise RuntimeError("SegmentBuilder.append called before reset()")
        if truncated and not done:
            raise ValueError("SegmentBuilder.append: truncated=True needs done=True (truncation ends the episode)")
        self._current.append(decision, reward, next_observation)
        if done:
            self._current.mark_episode_end(truncated)
        ready: list[PriorZeroGameSegment] = []
        if self._pending is not None and (self._current.num_steps >= self.pad_length or done):
            self._pending.pad_over(self._current)
            ready.append(self._pending)
            self._pending = None
        if done:
            ready.append(self._current)
            self._current = None
        elif self._current.is_full():
            prefix = self._current.next_history_prefix(self.history_length)
            self._pending = self._current
            self._current = self._new_segment(next_observation, prefix)
        return ready

    def flush(self) -> list[PriorZeroGameSegment]:
        """Hand over unfinished data (e.g. when collection stops mid-episode); nothing is marked terminal."""
        ready: list[PriorZeroGameSegment] = []
        if self._pending is not None:
            if self._current is not None and self._current.num_steps > 0:
                self._pending.pad_over(self._current)
            ready.append(self._pending)
        if self._current is not None and self._current.num_steps > 0:
            ready.append(self._current)
        self._current = self._pending = None
        return ready
