"""Batched MuZero-style PUCT search over a learned model, with the (already mixed) prior at the root.

Why our own search: LightZero 0.2.0's compiled tree exists only for CPython 3.11 and every module under
``lzero.mcts`` imports it. This module needs numpy alone; the world model is reached through :class:`SearchModel`.

Semantics follow LightZero's C++ MuZero tree (``lzero/mcts/ctree/ctree_muzero``), so the two give the same visit
counts on the same model outputs (``tests/mcts/test_parity_ctree.py``):

* pUCT: ``score(a) = prior(a) * (log((N + c_base + 1) / c_base) + c_init) * sqrt(N) / (1 + n(a)) + norm(Q(a))``
  where ``N`` is the sum of the children's visits (so a freshly expanded node's first choice ignores the prior,
  as in LightZero and MuZero's pseudocode), ``Q(a) = r(a) + discount * V(child)``, unvisited children take the
  parent's mean Q, and ``norm`` is min-max normalisation over all Q seen in this root's tree (range at least
  ``value_delta_max``), clipped to [0, 1].
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
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
from easydict import EasyDict

from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)

Latents = Any  # np.ndarray or torch.Tensor of shape [B, ...]; the search only stores and indexes them

_TIE_EPSILON = 1e-6  # LightZero treats scores within 1e-6 of the best as tied


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
    tie_break: str = "random"  # (str) 'random': uniform among scores within 1e-6 of the best (LightZero); 'first': lowest index
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
    """What the search needs from a world model (see ``unizero_adapter.UniZeroSearchModel``)."""

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
            parent_latents: ``[B, ...]`` latent of each leaf's parent, as returned earlier by the model (or the root's).
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
    """Preallocated statistics of B trees; edge ``(b, node, action)`` holds the child's statistics."""

    def __init__(self, batch: int, num_nodes: int, num_actions: int) -> None:
        shape = (batch * num_nodes, num_actions)  # rows are (root, node) pairs: row = b * num_nodes + node
        self.batch, self.num_nodes, self.num_actions = batch, num_nodes, num_actions
        self.visits = np.zeros(shape, dtype=np.int64)
        self.value_sum = np.zeros(shape, dtype=np.float64)
        self.reward = np.zeros(shape, dtype=np.float64)
        self.prior = np.zeros(shape, dtype=np.float64)
        self.child = np.full(shape, -1, dtype=np.int64)
        self.root_visits = np.ones(batch, dtype=np.int64)  # LightZero counts one visit when preparing the root
        self.root_value_sum = np.zeros(batch, dtype=np.float64)
        self.q_min = np.full(batch, np.inf)
        self.q_max = np.full(batch, -np.inf)
        self.row_base = np.arange(batch, dtype=np.int64) * num_nodes

    def root_rows(self) -> np.ndarray:
        return self.row_base


@dataclass
class _Leaves:
    """Where each root's selection ended in one simulation."""

    parent: np.ndarray  # [B] parent node of the new leaf
    action: np.ndarray  # [B] action from that parent
    depth: np.ndarray  # [B] edges from the root to the leaf (>= 1)
    path_nodes: np.ndarray = field(repr=False)  # [B, max_depth] nodes along the path
    path_actions: np.ndarray = field(repr=False)  # [B, max_depth] actions along the path


class BatchedMCTS:
    """MuZero PUCT search over B roots at once; see the module docstring for the exact semantics."""

    config = dataclasses.asdict(SearchConfig())

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(dict(cls.config))

    def __init__(self, cfg: SearchConfig | Mapping | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, SearchConfig) else SearchConfig.from_dict(cfg)

    def search(
        self, model: SearchModel, root: RootInput, *, add_noise: bool, rng: np.random.Generator
    ) -> SearchOutput:
        """Run ``num_simulations`` simulations from each root; ``add_noise`` is True in collect, False in eval."""
        import time

        batch, num_actions = root.validate()
        cfg = self.cfg
        legal = np.asarray(root.legal_mask)
        trees = _Trees(batch, cfg.num_simulations + 1, num_actions)
        root_prior = masked_softmax(np.asarray(root.policy_logits, dtype=np.float64), legal)
        if add_noise:
            noise = dirichlet_noise(legal, cfg.root_dirichlet_alpha, rng)
            root_prior = np.where(legal, root_prior * (1 - cfg.root_noise_weight) + noise * cfg.root_noise_weight, 0.0)
        trees.prior[trees.root_rows()] = root_prior
        root_reward = np.zeros(batch) if root.reward is None else np.asarray(root.reward, dtype=np.float64)
        inner_mask = None if cfg.inner_action_mask == "all" else legal

        latents = _LatentStore(root.latent, cfg.num_simulations + 1)
        tree_seconds = model_seconds = 0.0
        for sim in range(cfg.num_simulations):
            t0 = time.perf_counter()
            leaves = self._select(trees, legal, inner_mask, rng)
            parent_latents = latents.gather(leaves.parent)
            t1 = time.perf_counter()
            out = model.recurrent_inference(
                parent_latents, leaves.action.copy(), sim, leaves.depth.tolist(), leaves.parent.copy()
            )
            t2 = time.perf_counter()
            latents.put(sim + 1, out.latent)
            self._expand(trees, leaves, sim + 1, out, inner_mask)
            self._backup(trees, leaves, np.asarray(out.value, dtype=np.float64).reshape(batch), root_reward)
            tree_seconds += (t1 - t0) + (time.perf_counter() - t2)
            model_seconds += t2 - t1

        visit_counts = trees.visits[trees.root_rows()].copy()
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
        self, trees: _Trees, legal: np.ndarray, inner_mask: np.ndarray | None, rng: np.random.Generator
    ) -> _Leaves:
        """Descend all B trees level by level (all active roots are at the same depth) to an unexpanded child."""
        cfg = self.cfg
        batch, num_nodes = trees.batch, trees.num_nodes
        max_depth = num_nodes  # a path can be at most as long as the number of nodes
        path_nodes = np.zeros((batch, max_depth), dtype=np.int64)
        path_actions = np.zeros((batch, max_depth), dtype=np.int64)
        leaf_parent = np.zeros(batch, dtype=np.int64)
        leaf_action = np.zeros(batch, dtype=np.int64)
        leaf_depth = np.zeros(batch, dtype=np.int64)
        active = np.arange(batch)
        node = np.zeros(batch, dtype=np.int64)
        parent_q = np.zeros(batch)
        depth = 0
        while active.size:
            rows = trees.row_base[active] + node
            visits = trees.visits[rows]
            visited = visits > 0
            q = trees.reward[rows] + cfg.discount_factor * trees.value_sum[rows] / np.maximum(visits, 1)
            q_sum = np.where(visited, q, 0.0).sum(axis=1)
            n_visited = visited.sum(axis=1)
            if depth == 0:
                mean_q = np.where(n_visited > 0, q_sum / np.maximum(n_visited, 1), parent_q)
            else:
                mean_q = (parent_q + q_sum) / (n_visited + 1)
            total = visits.sum(axis=1)
            pb_c = (np.log((total + cfg.pb_c_base + 1) / cfg.pb_c_base) + cfg.pb_c_init) * np.sqrt(total)
            score = pb_c[:, None] * trees.prior[rows] / (visits + 1)
            value_score = np.where(visited, q, mean_q[:, None])
            q_min, q_max = trees.q_min[active], trees.q_max[active]
            delta = q_max - q_min
            has_range = delta > 0
            scale = np.where(has_range, np.maximum(delta, cfg.value_delta_max), 1.0)
            offset = np.where(has_range, q_min, 0.0)
            score += np.clip((value_score - offset[:, None]) / scale[:, None], 0.0, 1.0)
            allowed = legal[active] if depth == 0 else (None if inner_mask is None else inner_mask[active])
            if allowed is not None:
                score = np.where(allowed, score, -np.inf)
            action = self._argmax(score, rng)

            path_nodes[active, depth] = node
            path_actions[active, depth] = action
            child = trees.child[rows, action]
            expanded = child >= 0
            done = active[~expanded]
            leaf_parent[done] = node[~expanded]
            leaf_action[done] = action[~expanded]
            leaf_depth[done] = depth + 1
            parent_q = mean_q[expanded]
            node = child[expanded]
            active = active[expanded]
            depth += 1
        return _Leaves(leaf_parent, leaf_action, leaf_depth, path_nodes, path_actions)

    def _argmax(self, score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Best action per row; under 'random', ties within 1e-6 of the best are broken uniformly with ``rng``."""
        best = score.argmax(axis=1)
        if self.cfg.tie_break == "first":
            return best
        near = score >= (score[np.arange(score.shape[0]), best] - _TIE_EPSILON)[:, None]
        tied = near.sum(axis=1) > 1
        if tied.any():
            keys = rng.random(near[tied].shape)
            best[tied] = np.where(near[tied], keys, -1.0).argmax(axis=1)
        return best

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
        trees.reward[parent_rows, leaves.action] = np.asarray(out.reward, dtype=np.float64).reshape(batch)
        mask = np.ones_like(logits, dtype=bool) if inner_mask is None else inner_mask
        trees.prior[trees.row_base + node_index] = masked_softmax(logits, mask)

    def _backup(self, trees: _Trees, leaves: _Leaves, leaf_value: np.ndarray, root_reward: np.ndarray) -> None:
        """Add the discounted return to every edge on each path (deepest first) and update the min-max bounds."""
        gamma = self.cfg.discount_factor
        bootstrap = leaf_value.copy()
        for level in range(int(leaves.depth.max()) - 1, -1, -1):
            active = np.flatnonzero(leaves.depth > level)
            rows = trees.row_base[active] + leaves.path_nodes[active, level]
            actions = leaves.path_actions[active, level]
            value_sum = trees.value_sum[rows, actions] + bootstrap[active]
            visits = trees.visits[rows, actions] + 1
            trees.value_sum[rows, actions] = value_sum
            trees.visits[rows, actions] = visits
            reward = trees.reward[rows, actions]
            q = reward + gamma * value_sum / visits
            trees.q_min[active] = np.minimum(trees.q_min[active], q)
            trees.q_max[active] = np.maximum(trees.q_max[active], q)
            bootstrap[active] = reward + gamma * bootstrap[active]
        trees.root_value_sum += bootstrap
        trees.root_visits += 1
        root_q = root_reward + gamma * trees.root_value_sum / trees.root_visits
        np.minimum(trees.q_min, root_q, out=trees.q_min)
        np.maximum(trees.q_max, root_q, out=trees.q_max)


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
