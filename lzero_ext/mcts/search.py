"""Batched MuZero-style PUCT search over a learned model, with the (already mixed) prior at the root.

Why our own search: LightZero 0.2.0's compiled tree exists only for CPython 3.11 and every module under
``lzero.mcts`` imports it. This module needs numpy alone; the world model is reached through :class:`SearchModel`.

Semantics follow LightZero's C++ MuZero tree (``lzero/mcts/ctree/ctree_muzero``), so the two give the same visit
counts on the same model outputs (``tests/mcts/test_parity_ctree.py``):

* pUCT: ``score(a) = prior(a) * (log((N + c_base + 1) / c_base) + c_init) * sqrt(N) / (1 + n(a)) + norm(Q(a))``
  where ``N`` is the sum of the children's visits (so a freshly expanded node's first choice ignores the prior,
  as in LightZero and MuZero's pseudocode), ``Q(a) = r(a) + discount * V(child)``, unvisited children take the
  parent's mean Q (at the root: the mean Q of its visited children; below: ``(parent's mean Q + sum of visited
  Q) / (visited + 1)``), and ``norm`` is min-max normalisation over all Q seen in this root's tree (range at least
  ``value_delta_max``), clipped to [0, 1]. Exact ties are broken at random (``tie_break='random'``, like
  LightZero's ``rand()``) or by lowest index (``'first'``, used for the parity tests).
* Backup: along the path from leaf to root, ``value_sum += G; G = r + discount * G``; the root starts with one visit
  and zero value sum, so ``root_value = value_sum / (num_simulations + 1)`` exactly as LightZero reports it.
* Root priors are the softmax of the caller's logits over legal actions; Dirichlet noise (collect only) is mixed
  into the legal actions' priors. Illegal root actions get no prior and are never selected.

Everything is vectorised over the B roots: the tree of each root lives in preallocated ``[B, S+1, A]`` arrays
(edge statistics indexed by parent node and action), node ``k`` of every tree is the node created at simulation
``k-1`` (0 = root), and each simulation makes one batched model call for all roots.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
from easydict import EasyDict

from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)

Latents = Any  # np.ndarray or torch.Tensor of shape [B, ...]; the search only stores and indexes them

_TIE_EPSILON = 1e-7  # random tie-breaking jitter; LightZero treats scores within 1e-6 of the best as tied


@dataclass
class SearchConfig:
    """Search hyper-parameters; the single schema behind :attr:`BatchedMCTS.config`."""

    num_simulations: int = 50  # (int) simulations (= new nodes) per root and search
    pb_c_base: float = 19652.0  # (float) pUCT c2: how slowly exploration decays with the parent's visits
    pb_c_init: float = 1.25  # (float) pUCT c1: weight of the prior term
    discount_factor: float = 0.997  # (float) discount applied to values and rewards inside the tree
    value_delta_max: float = 0.01  # (float) smallest Q range used by the min-max normalisation
    root_dirichlet_alpha: float = 0.3  # (float) concentration of the Dirichlet noise at the root (collect only)
    root_noise_weight: float = 0.25  # (float) fraction of the root prior replaced by that noise
    tie_break: str = "random"  # (str) 'random': exact ties broken uniformly at random (LightZero); 'first': lowest index
    inner_action_mask: str = "all"  # (str) actions allowed below the root: 'all' (LightZero) or 'root' (the root's legal mask)

    def __post_init__(self) -> None:
        if self.num_simulations < 1:
            raise ValueError(f"num_simulations must be >= 1, got {self.num_simulations}")
        if not 0.0 <= self.root_noise_weight <= 1.0:
            raise ValueError(f"root_noise_weight must be in [0, 1], got {self.root_noise_weight}")
        if self.root_dirichlet_alpha <= 0:
            raise ValueError(f"root_dirichlet_alpha must be > 0, got {self.root_dirichlet_alpha}")
        if not 0.0 < self.discount_factor <= 1.0:
            raise ValueError(f"discount_factor must be in (0, 1], got {self.discount_factor}")
        if self.tie_break not in ("random", "first"):
            raise ValueError(f"tie_break must be 'random' or 'first', got {self.tie_break!r}")
        if self.inner_action_mask not in ("all", "root"):
            raise ValueError(f"inner_action_mask must be 'all' or 'root', got {self.inner_action_mask!r}")

    @classmethod
    def from_dict(cls, user: Mapping | None) -> "SearchConfig":
        """Build from a (partial) dict; unknown keys raise ``KeyError`` naming the nearest valid key."""
        merged = merge_strict(dataclasses.asdict(cls()), user, where="mcts")
        return cls(**merged)


@dataclass
class RecurrentOutput:
    """One batched model step for the B leaves of a simulation; rewards and values are already scalars."""

    latent: Latents  # [B, ...] next latent state, stored by the search and handed back as a parent later
    reward: np.ndarray  # [B] float, reward of the transition into the new node
    value: np.ndarray  # [B] float, value of the new node
    policy_logits: np.ndarray  # [B, A] float, prior logits of the new node's children


class SearchModel(Protocol):
    """What the search needs from a world model (see ``unizero_adapter.UniZeroSearchModel``).

    ``uses_parent_latents``: if False the search keeps no latents and passes ``parent_latents=None`` (a model that
    keeps its own per-node state, e.g. ``UniZeroNodeKVSearchModel``, saves a device gather per simulation).
    """

    uses_parent_latents: bool

    def recurrent_inference(
        self,
        parent_latents: Latents,
        actions: np.ndarray,
        simulation_index: int,
        search_depth: list[int],
        parent_nodes: np.ndarray,
    ) -> RecurrentOutput:
        """Expand one leaf per root.

        Args:
            parent_latents: ``[B, ...]`` latent of each leaf's parent, as returned earlier by the model (or the root's);
                None if the model's ``uses_parent_latents`` is False.
            actions: ``[B]`` int64 action taken from the parent.
            simulation_index: 0-based index of this simulation within the search (UniZero keys its caches by it).
            search_depth: per root, the number of edges from the root to the new leaf (UniZero's ``search_depth``).
            parent_nodes: ``[B]`` int64 index of the parent node in its tree (0 = root, k = node made at simulation
                k-1); lets a model keep per-node state (e.g. KV caches) without hashing latents.
        """
        ...


@dataclass
class RootInput:
    """The B roots of one search."""

    latent: Latents  # [B, ...] root latent states
    policy_logits: np.ndarray  # [B, A] root prior logits, already mixed by the caller (see root_prior.py)
    value: np.ndarray  # [B] the model's value of the root (reported back, not used by the search)
    legal_mask: np.ndarray  # [B, A] bool, True for legal actions
    reward: np.ndarray | None = None  # [B] reward stored at the root (LightZero uses 0); None means zeros

    def validate(self) -> tuple[int, int]:
        """Check shapes and legality; return (B, A)."""
        logits = np.asarray(self.policy_logits)
        if logits.ndim != 2:
            raise ValueError(f"RootInput.policy_logits must be [B, A], got shape {logits.shape}")
        batch, num_actions = logits.shape
        mask = np.asarray(self.legal_mask)
        if mask.shape != (batch, num_actions) or mask.dtype != np.bool_:
            raise ValueError(f"RootInput.legal_mask must be bool [B, A]={batch, num_actions}, got {mask.dtype} {mask.shape}")
        if not mask.any(axis=1).all():
            raise ValueError(f"Roots {np.flatnonzero(~mask.any(axis=1)).tolist()} have no legal action")
        if len(self.latent) != batch:
            raise ValueError(f"RootInput.latent has {len(self.latent)} rows, policy_logits has {batch}")
        if np.asarray(self.value).shape != (batch,):
            raise ValueError(f"RootInput.value must be [B]={batch}, got shape {np.asarray(self.value).shape}")
        if self.reward is not None and np.asarray(self.reward).shape != (batch,):
            raise ValueError(f"RootInput.reward must be [B]={batch}, got shape {np.asarray(self.reward).shape}")
        return batch, num_actions


@dataclass
class SearchOutput:
    """What a search returns, per root; everything the buffer and action selection need."""

    visit_counts: np.ndarray  # [B, A] int64 root visit counts, zero on illegal actions
    visit_distribution: np.ndarray  # [B, A] float32 visit counts normalised to sum to one
    root_value: np.ndarray  # [B] float searched root value (LightZero's ``roots.get_values()``)
    predicted_value: np.ndarray  # [B] float the model's root value, passed through from RootInput
    root_prior: np.ndarray  # [B, A] float32 prior actually used at the root (after noise), zero on illegal actions
    tree_seconds: float = 0.0  # wall time spent in tree bookkeeping (selection, expansion, backup)
    model_seconds: float = 0.0  # wall time spent in model calls


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the True entries of ``mask`` per row; zero elsewhere. Rows need at least one finite entry."""
    masked = np.where(mask, logits, -np.inf)
    row_max = masked.max(axis=1, keepdims=True)
    if not np.isfinite(row_max).all():
        bad = np.flatnonzero(~np.isfinite(row_max[:, 0])).tolist()
        raise ValueError(f"Rows {bad} have no finite logit on an allowed action")
    exp = np.exp(masked - row_max)
    return exp / exp.sum(axis=1, keepdims=True)


def dirichlet_noise(legal_mask: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet(alpha) over each row's legal actions (zero elsewhere), drawn as normalised Gamma samples."""
    gamma = rng.standard_gamma(alpha, size=legal_mask.shape) * legal_mask
    total = gamma.sum(axis=1, keepdims=True)
    # A row of all-zero draws (possible for tiny alpha in float64) falls back to uniform over its legal actions.
    uniform = legal_mask / legal_mask.sum(axis=1, keepdims=True)
    return np.where(total > 0, gamma / np.maximum(total, 1e-300), uniform)


class _Trees:
    """Preallocated statistics of B trees; edge ``(b, node, action)`` holds the child's statistics.

    Edge statistics live in one float array ``stats[row, channel, action]`` with ``row = b * num_nodes + node`` and
    channels (visits, Q, prior, value_sum, reward): selection gathers the first three of a node's children with one
    fancy index, and the backup keeps ``Q = reward + discount * value_sum / visits`` up to date (0 while unvisited).
    Per node, ``node_stats[row]`` holds (sum of the children's Q, number of visited children, sum of the children's
    visits). The flat views have one extra scratch slot/row that masked-out scatters write to harmlessly.
    """

    VISITS, Q, PRIOR, VALUE_SUM, REWARD = range(5)
    NUM_CHANNELS = 5
    Q_SUM, NUM_VISITED, CHILD_VISITS = range(3)

    def __init__(self, batch: int, num_nodes: int, num_actions: int) -> None:
        self.batch, self.num_nodes, self.num_actions = batch, num_nodes, num_actions
        num_rows = batch * num_nodes
        self.flat = np.zeros(num_rows * self.NUM_CHANNELS * num_actions + 1)
        self.stats = self.flat[:-1].reshape(num_rows, self.NUM_CHANNELS, num_actions)
        self.scratch = self.flat.size - 1
        self.child = np.full((num_rows, num_actions), -1, dtype=np.int64)
        self.node_stats = np.zeros((num_rows + 1, 3))
        self.scratch_row = num_rows
        self.root_visits = np.ones(batch)  # LightZero counts one visit when preparing the root
        self.root_value_sum = np.zeros(batch)
        self.q_min = np.full(batch, np.inf)
        self.q_max = np.full(batch, -np.inf)
        self.row_base = np.arange(batch, dtype=np.int64) * num_nodes

    def flat_index(self, rows: np.ndarray, channel: int, actions: np.ndarray) -> np.ndarray:
        return rows * (self.NUM_CHANNELS * self.num_actions) + channel * self.num_actions + actions

    def root_stats(self, channel: int) -> np.ndarray:
        return self.stats[self.row_base, channel]


@dataclass
class _Leaves:
    """Where each root's selection ended in one simulation."""

    parent: np.ndarray  # [B] parent node of the new leaf
    action: np.ndarray  # [B] action from that parent
    depth: np.ndarray  # [B] edges from the root to the leaf (>= 1)
    path_nodes: np.ndarray = field(repr=False)  # [B, max_depth] nodes along the path (valid below depth)
    path_actions: np.ndarray = field(repr=False)  # [B, max_depth] actions along the path (valid below depth)


class BatchedMCTS:
    """MuZero PUCT search over B roots at once; see the module docstring for the exact semantics."""

    config = dataclasses.asdict(SearchConfig())

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(dict(cls.config))

    def __init__(self, cfg: SearchConfig | Mapping | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, SearchConfig) else SearchConfig.from_dict(cfg)
        # pUCT exploration factor (log((N + c2 + 1) / c2) + c1) * sqrt(N) for every possible child-visit total N.
        total = np.arange(self.cfg.num_simulations + 2, dtype=np.float64)
        self._pb_c_table = (np.log((total + self.cfg.pb_c_base + 1) / self.cfg.pb_c_base) + self.cfg.pb_c_init) * np.sqrt(total)

    def search(
        self, model: SearchModel, root: RootInput, *, add_noise: bool, rng: np.random.Generator
    ) -> SearchOutput:
        """Run ``num_simulations`` simulations from each root; ``add_noise`` is True in collect, False in eval."""
        batch, num_actions = root.validate()
        cfg = self.cfg
        legal = np.asarray(root.legal_mask)
        num_nodes = cfg.num_simulations + 1
        trees = _Trees(batch, num_nodes, num_actions)
        root_prior = masked_softmax(np.asarray(root.policy_logits, dtype=np.float64), legal)
        if add_noise:
            noise = dirichlet_noise(legal, cfg.root_dirichlet_alpha, rng)
            root_prior = np.where(legal, root_prior * (1 - cfg.root_noise_weight) + noise * cfg.root_noise_weight, 0.0)
        trees.stats[trees.row_base, _Trees.PRIOR] = root_prior
        root_reward = np.zeros(batch) if root.reward is None else np.asarray(root.reward, dtype=np.float64)
        penalties = _ActionPenalties(legal, cfg.inner_action_mask == "root")
        path_nodes = np.zeros((batch, num_nodes), dtype=np.int64)
        path_actions = np.zeros((batch, num_nodes), dtype=np.int64)

        latents = _LatentStore(root.latent, num_nodes) if model.uses_parent_latents else None
        tree_seconds = model_seconds = 0.0
        for sim in range(cfg.num_simulations):
            t0 = time.perf_counter()
            leaves = self._select(trees, penalties, path_nodes, path_actions, rng)
            parent_latents = None if latents is None else latents.gather(leaves.parent)
            t1 = time.perf_counter()
            out = model.recurrent_inference(
                parent_latents, leaves.action.copy(), sim, leaves.depth.tolist(), leaves.parent.copy()
            )
            t2 = time.perf_counter()
            if latents is not None:
                latents.put(sim + 1, out.latent)
            self._expand(trees, leaves, sim + 1, out, penalties.inner_mask)
            self._backup(trees, leaves, np.asarray(out.value, dtype=np.float64).reshape(batch), root_reward)
            tree_seconds += (t1 - t0) + (time.perf_counter() - t2)
            model_seconds += t2 - t1

        visit_counts = trees.root_stats(_Trees.VISITS).astype(np.int64)
        return SearchOutput(
            visit_counts=visit_counts,
            visit_distribution=(visit_counts / visit_counts.sum(axis=1, keepdims=True)).astype(np.float32),
            root_value=trees.root_value_sum / trees.root_visits,
            predicted_value=np.asarray(root.value, dtype=np.float64).copy(),
            root_prior=root_prior.astype(np.float32),
            tree_seconds=tree_seconds,
            model_seconds=model_seconds,
        )

    def _select(
        self,
        trees: _Trees,
        penalties: "_ActionPenalties",
        path_nodes: np.ndarray,
        path_actions: np.ndarray,
        rng: np.random.Generator,
    ) -> _Leaves:
        """Descend all B trees level by level (all active roots are at the same depth) to an unexpanded child."""
        cfg = self.cfg
        batch = trees.batch
        # The min-max bounds do not change during selection: precompute each root's normalisation.
        delta = trees.q_max - trees.q_min
        has_range = delta > 0
        norm = np.empty((batch, 2))  # (offset, 1 / scale) per root
        norm[:, 0] = np.where(has_range, trees.q_min, 0.0)
        norm[:, 1] = np.where(has_range, 1.0 / np.maximum(np.where(has_range, delta, 1.0), cfg.value_delta_max), 1.0)
        random_ties = cfg.tie_break == "random"
        leaf_parent = np.zeros(batch, dtype=np.int64)
        leaf_action = np.zeros(batch, dtype=np.int64)
        leaf_depth = np.zeros(batch, dtype=np.int64)
        active = np.arange(batch)
        node = np.zeros(batch, dtype=np.int64)
        rows = trees.row_base
        parent_q = np.zeros(batch)
        depth = 0
        while active.size:
            stats = trees.stats[rows, :3]
            visits, q = stats[:, _Trees.VISITS], stats[:, _Trees.Q]
            visited = visits > 0
            node_stats = trees.node_stats[rows]
            q_sum, n_visited = node_stats[:, _Trees.Q_SUM], node_stats[:, _Trees.NUM_VISITED]
            if depth == 0:
                mean_q = np.where(n_visited > 0, q_sum / np.maximum(n_visited, 1), parent_q)
            else:
                mean_q = (parent_q + q_sum) / (n_visited + 1)
            pb_c = self._pb_c_table[node_stats[:, _Trees.CHILD_VISITS].astype(np.int64)]
            score = pb_c[:, None] * stats[:, _Trees.PRIOR] / (visits + 1)
            value_score = np.where(visited, q, mean_q[:, None])
            root_norm = norm[active]
            value_score -= root_norm[:, :1]
            value_score *= root_norm[:, 1:]
            np.maximum(value_score, 0.0, out=value_score)
            score += np.minimum(value_score, 1.0, out=value_score)
            penalty = penalties.at(depth, active)
            if penalty is not None:
                score += penalty
            if random_ties:
                # Jitter far below any meaningful score gap: exact ties (e.g. every child of a fresh node, where
                # the prior term vanishes) are broken uniformly at random, like LightZero's rand() over ties.
                score += rng.random(score.shape) * _TIE_EPSILON
            action = score.argmax(axis=1)

            path_nodes[active, depth] = node
            path_actions[active, depth] = action
            child = trees.child[rows, action]
            expanded = child >= 0
            if not expanded.all():
                done = active[~expanded]
                leaf_parent[done] = node[~expanded]
                leaf_action[done] = action[~expanded]
                leaf_depth[done] = depth + 1
                mean_q, child, active = mean_q[expanded], child[expanded], active[expanded]
            parent_q, node = mean_q, child
            rows = trees.row_base[active] + node
            depth += 1
        return _Leaves(leaf_parent, leaf_action, leaf_depth, path_nodes, path_actions)

    def _expand(
        self, trees: _Trees, leaves: _Leaves, node_index: int, out: RecurrentOutput, inner_mask: np.ndarray | None
    ) -> None:
        """Create node ``node_index`` in every tree as the child of its leaf edge, with its reward and priors."""
        batch = trees.batch
        logits = np.asarray(out.policy_logits, dtype=np.float64)
        if logits.shape != (batch, trees.num_actions):
            raise ValueError(f"Model policy_logits must be [B, A]={batch, trees.num_actions}, got {logits.shape}")
        parent_rows = trees.row_base + leaves.parent
        trees.child[parent_rows, leaves.action] = node_index
        trees.node_stats[parent_rows, _Trees.NUM_VISITED] += 1  # the leaf edge gets its first visit in this backup
        reward_index = trees.flat_index(parent_rows, _Trees.REWARD, leaves.action)
        trees.flat[reward_index] = np.asarray(out.reward, dtype=np.float64).reshape(batch)
        if inner_mask is None:
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            prior = exp / exp.sum(axis=1, keepdims=True)
        else:
            prior = masked_softmax(logits, inner_mask)
        trees.stats[trees.row_base + node_index, _Trees.PRIOR] = prior

    def _backup(self, trees: _Trees, leaves: _Leaves, leaf_value: np.ndarray, root_reward: np.ndarray) -> None:
        """Add the discounted return to every edge on each path and update Q, node sums and min-max bounds."""
        gamma = self.cfg.discount_factor
        num_actions = trees.num_actions
        max_depth = int(leaves.depth.max())
        on_path = np.arange(max_depth)[None, :] < leaves.depth[:, None]  # [B, D]
        rows = trees.row_base[:, None] + leaves.path_nodes[:, :max_depth]
        visit_index = np.where(on_path, trees.flat_index(rows, _Trees.VISITS, leaves.path_actions[:, :max_depth]), trees.scratch)

        def channel(ch: int) -> np.ndarray:
            return visit_index + np.where(on_path, ch * num_actions, 0)

        reward = np.where(on_path, trees.flat[channel(_Trees.REWARD)], 0.0)
        # Discounted return seen by the edge at each level: G_d = r_{d+1} + gamma * G_{d+1}, G_leaf = value.
        bootstrap = np.empty_like(reward)
        carry = leaf_value.copy()
        for level in range(max_depth - 1, -1, -1):
            if level + 1 < max_depth:
                carry = np.where(leaves.depth == level + 1, leaf_value, reward[:, level + 1] + gamma * carry)
            bootstrap[:, level] = carry
        value_index = channel(_Trees.VALUE_SUM)
        value_sum = trees.flat[value_index] + bootstrap
        visits = trees.flat[visit_index] + 1.0
        q = reward + gamma * value_sum / visits
        trees.flat[value_index] = value_sum
        trees.flat[visit_index] = visits
        trees.flat[channel(_Trees.Q)] = q
        trees.flat[trees.scratch] = 0.0
        path_rows = np.where(on_path, rows, trees.scratch_row)
        trees.node_stats[path_rows, _Trees.CHILD_VISITS] += 1.0
        trees.node_stats[path_rows, _Trees.Q_SUM] = trees.stats[np.minimum(path_rows, trees.scratch_row - 1), _Trees.Q].sum(axis=-1)
        trees.node_stats[trees.scratch_row] = 0.0
        np.minimum(trees.q_min, np.where(on_path, q, np.inf).min(axis=1), out=trees.q_min)
        np.maximum(trees.q_max, np.where(on_path, q, -np.inf).max(axis=1), out=trees.q_max)
        trees.root_value_sum += reward[:, 0] + gamma * bootstrap[:, 0]
        trees.root_visits += 1
        root_q = root_reward + gamma * trees.root_value_sum / trees.root_visits
        np.minimum(trees.q_min, root_q, out=trees.q_min)
        np.maximum(trees.q_max, root_q, out=trees.q_max)


class _ActionPenalties:
    """Additive -inf penalties that keep selection on allowed actions (root always; inner nodes optionally)."""

    def __init__(self, legal: np.ndarray, mask_inner: bool) -> None:
        self.root = np.where(legal, 0.0, -np.inf)
        self.any_illegal = not legal.all()
        self.inner_mask = legal if mask_inner else None

    def at(self, depth: int, active: np.ndarray) -> np.ndarray | None:
        if not self.any_illegal or (depth > 0 and self.inner_mask is None):
            return None
        return self.root[active] if active.size != self.root.shape[0] else self.root


class _LatentStore:
    """Latents of all nodes, ``[num_nodes, B, ...]``, in the type and device the model returned (numpy or torch)."""

    def __init__(self, root_latent: Latents, num_nodes: int) -> None:
        self.is_torch = isinstance(root_latent, torch.Tensor)
        batch = len(root_latent)
        if self.is_torch:
            self.store = root_latent.new_empty((num_nodes, *root_latent.shape))
            self.batch_index = torch.arange(batch, device=root_latent.device)
        else:
            root_latent = np.asarray(root_latent)
            self.store = np.empty((num_nodes, *root_latent.shape), dtype=root_latent.dtype)
            self.batch_index = np.arange(batch)
        self.store[0] = root_latent

    def put(self, node_index: int, latent: Latents) -> None:
        if self.is_torch != isinstance(latent, torch.Tensor):
            raise TypeError("The model must return latents of the same kind (numpy or torch) as the root latents")
        if tuple(latent.shape) != tuple(self.store.shape[1:]):
            raise ValueError(f"Model latent has shape {tuple(latent.shape)}, roots have {tuple(self.store.shape[1:])}")
        self.store[node_index] = latent

    def gather(self, nodes: np.ndarray) -> Latents:
        if self.is_torch:
            return self.store[torch.as_tensor(nodes, device=self.store.device), self.batch_index]
        return self.store[nodes, self.batch_index]


def select_action(
    visit_counts: np.ndarray,
    temperature: float,
    deterministic: bool,
    rng: np.random.Generator,
    legal_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Pick one action per root from its visit counts.

    ``deterministic`` (eval): the most visited legal action (lowest index on ties, like LightZero's ``np.argmax``).
    Otherwise (collect): sample with probability proportional to ``visits ** (1 / temperature)``; actions with zero
    visits, and illegal ones if ``legal_mask`` is given, are never chosen.
    """
    counts = np.asarray(visit_counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"visit_counts must be [B, A], got shape {counts.shape}")
    allowed = counts > 0 if legal_mask is None else (counts > 0) & np.asarray(legal_mask, dtype=bool)
    if not allowed.any(axis=1).all():
        raise ValueError(f"Roots {np.flatnonzero(~allowed.any(axis=1)).tolist()} have no visited legal action")
    if deterministic:
        return np.where(allowed, counts, -1.0).argmax(axis=1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    log_p = np.where(allowed, np.log(np.where(allowed, counts, 1.0)) / temperature, -np.inf)
    probs = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cumulative = probs.cumsum(axis=1)
    draws = rng.random(counts.shape[0])[:, None] * cumulative[:, -1:]
    choice = (cumulative <= draws).sum(axis=1)
    # Guard against float round-off landing past the last allowed action.
    last_allowed = counts.shape[1] - 1 - np.argmax(allowed[:, ::-1], axis=1)
    return np.minimum(choice, last_allowed)
