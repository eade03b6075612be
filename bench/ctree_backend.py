"""LightZero's compiled MuZero tree behind the same ``search`` signature as :class:`BatchedMCTS`.

Optional: ``lzero.mcts.ctree.ctree_muzero`` ships only for CPython 3.11, so it is imported when a
:class:`CtreeMCTS` is built, never at module import. It serves as the reference for parity tests and benchmarks,
so it lives with them, not in the library: ``bench/mcts_speed.py`` imports it as ``ctree_backend``,
``tests/mcts/ctree_oracle.py`` as ``bench.ctree_backend``.
Note its tie-breaking uses C's ``rand()`` seeded from the clock, so it ignores ``rng`` for that.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from lzero_ext.import_utils import require
from lzero_ext.mcts.search import (
    RootInput,
    SearchConfig,
    SearchModel,
    SearchOutput,
    _LatentStore,
    dirichlet_noise,
)


def load_ctree_muzero():
    """Import LightZero's compiled MuZero tree, or raise ImportError saying why it is unavailable."""
    require(
        "lzero.mcts.ctree.ctree_muzero.mz_tree",
        feature="The LightZero C++ tree backend",
        install_hint="It ships only in LightZero's CPython 3.11 wheels; use BatchedMCTS (lzero_ext.mcts.search) instead.",
    )
    from lzero.mcts.ctree.ctree_muzero import mz_tree

    return mz_tree


class CtreeMCTS:
    """Same inputs and outputs as :class:`BatchedMCTS`, computed by LightZero's C++ tree (``mz_tree``)."""

    def __init__(self, cfg: SearchConfig | Mapping | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, SearchConfig) else SearchConfig.from_dict(cfg)
        if self.cfg.inner_action_mask != "all":
            raise ValueError("LightZero's tree allows every action below the root; use inner_action_mask='all'")
        self.tree = load_ctree_muzero()

    def search(
        self, model: SearchModel, root: RootInput, *, add_noise: bool, rng: np.random.Generator
    ) -> SearchOutput:
        batch, num_actions = root.validate()
        cfg, tree = self.cfg, self.tree
        legal = np.asarray(root.legal_mask)
        legal_lists = [np.flatnonzero(row).tolist() for row in legal]
        logits = np.where(legal, np.asarray(root.policy_logits, dtype=np.float64), -1e9).tolist()
        rewards = [0.0] * batch if root.reward is None else np.asarray(root.reward, dtype=np.float64).tolist()
        to_play = [-1] * batch
        roots = tree.Roots(batch, legal_lists)
        if add_noise:
            noise = dirichlet_noise(legal, cfg.root_dirichlet_alpha, rng)
            noises = [noise[i, legal_lists[i]].tolist() for i in range(batch)]
            roots.prepare(cfg.root_noise_weight, noises, rewards, logits, to_play)
        else:
            roots.prepare_no_noise(rewards, logits, to_play)
        min_max = tree.MinMaxStatsList(batch)
        min_max.set_delta(cfg.value_delta_max)
        latents = _LatentStore(root.latent, cfg.num_simulations + 1) if model.uses_parent_latents else None
        tree_seconds = model_seconds = 0.0
        for sim in range(cfg.num_simulations):
            t0 = time.perf_counter()
            results = tree.ResultsWrapper(num=batch)
            parent_nodes, batch_index, actions, to_play_out = tree.batch_traverse(
                roots, int(cfg.pb_c_base), cfg.pb_c_init, cfg.discount_factor, min_max, results, to_play
            )
            parent_nodes = np.asarray(parent_nodes, dtype=np.int64)
            if not np.array_equal(np.asarray(batch_index), np.arange(batch)):
                raise RuntimeError("LightZero's tree returned leaves out of root order")
            depth = list(results.get_search_len())
            parent_latents = None if latents is None else latents.gather(parent_nodes)
            t1 = time.perf_counter()
            out = model.recurrent_inference(parent_latents, np.asarray(actions, dtype=np.int64), sim, depth, parent_nodes)
            t2 = time.perf_counter()
            if latents is not None:
                latents.put(sim + 1, out.latent)
            tree.batch_backpropagate(
                sim + 1,
                cfg.discount_factor,
                np.asarray(out.reward, dtype=np.float64).reshape(batch).tolist(),
                np.asarray(out.value, dtype=np.float64).reshape(batch).tolist(),
                np.asarray(out.policy_logits, dtype=np.float64).tolist(),
                min_max,
                results,
                to_play_out,
            )
            tree_seconds += (t1 - t0) + (time.perf_counter() - t2)
            model_seconds += t2 - t1
        return self._output(roots, root, legal_lists, num_actions, tree_seconds, model_seconds)

    @staticmethod
    def _output(roots, root: RootInput, legal_lists, num_actions, tree_seconds, model_seconds) -> SearchOutput:
        batch = len(legal_lists)
        visit_counts = np.zeros((batch, num_actions), dtype=np.int64)
        for i, dist in enumerate(roots.get_distributions()):
            visit_counts[i, legal_lists[i]] = dist
        return SearchOutput(
            visit_counts=visit_counts,
            visit_distribution=(visit_counts / visit_counts.sum(axis=1, keepdims=True)).astype(np.float32),
            root_value=np.asarray(roots.get_values(), dtype=np.float64),
            predicted_value=np.asarray(root.value, dtype=np.float64).copy(),
            root_prior=np.full((batch, num_actions), np.nan, dtype=np.float32),  # the C++ tree does not expose it
            tree_seconds=tree_seconds,
            model_seconds=model_seconds,
        )
