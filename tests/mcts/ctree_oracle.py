"""Run LightZero's C++ tree on the parity cases and save its results (run by test_parity_ctree.py in a subprocess).

The subprocess is started with ``LD_PRELOAD`` of a two-line C library whose ``rand()`` returns 0, so the C++ tree
breaks ties by taking the first tied action (its ``srand(time)``/``rand()`` tie-breaking is otherwise
unreproducible); our search does the same with ``tie_break='first'``.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from lzero_ext.mcts.search import RootInput, SearchConfig
from bench.toy_models import ToyDynamicsModel

NUM_ACTIONS = 6

# (batch, num_simulations, add_noise)
CASES = [(1, 25, False), (1, 50, False), (8, 25, False), (8, 50, False), (8, 50, True)]


def parity_case(batch: int, num_simulations: int, add_noise: bool) -> tuple[SearchConfig, ToyDynamicsModel, RootInput]:
    """The model, roots (with some illegal actions) and config of one parity case."""
    model = ToyDynamicsModel(NUM_ACTIONS, latent_dim=8, seed=batch * 100 + num_simulations)
    legal = np.ones((batch, NUM_ACTIONS), dtype=bool)
    legal[:, 2] = False
    legal[::2, 4] = False
    root = model.root(batch, seed=7, legal_mask=legal)
    cfg = SearchConfig(num_simulations=num_simulations, tie_break="first")
    return cfg, model, root


UNIZERO_BATCH, UNIZERO_ACTIONS, UNIZERO_OBS_DIM, UNIZERO_SIMS = 3, 5, 12, 12


def unizero_case():
    """A tiny UniZero world model, two consecutive steps of observations, executed actions and legal masks."""
    from lzero_ext.mcts.unizero_adapter import build_unizero_model, unizero_world_model_config

    wm_cfg = unizero_world_model_config(
        UNIZERO_ACTIONS, env_num=4, num_simulations=UNIZERO_SIMS, embed_dim=32, num_layers=2, num_heads=2
    )
    model = build_unizero_model(UNIZERO_OBS_DIM, wm_cfg, seed=3)
    obs = torch.from_numpy(np.random.default_rng(5).normal(size=(2, UNIZERO_BATCH, UNIZERO_OBS_DIM)).astype(np.float32))
    executed = np.array([1, 4, 0])
    legal = np.ones((UNIZERO_BATCH, UNIZERO_ACTIONS), dtype=bool)
    legal[0, 2] = False
    return model, obs, executed, legal


def run_lightzero_unizero_search() -> dict[str, np.ndarray]:
    """UniZero's own search (UniZeroPolicy._forward_collect's calls, without noise) on the unizero_case()."""
    from easydict import EasyDict
    from lzero.mcts.ctree.ctree_muzero import mz_tree
    from lzero.mcts.tree_search.mcts_ctree import UniZeroMCTSCtree

    model, obs, executed, legal = unizero_case()
    mcts = UniZeroMCTSCtree(EasyDict(dict(
        num_simulations=UNIZERO_SIMS, discount_factor=0.997, device="cpu",
        model=dict(support_scale=50, categorical_distribution=True),
    )))
    results = {}
    last_obs, last_actions = torch.zeros_like(obs[0]), [-1] * UNIZERO_BATCH
    for step in range(2):
        timestep = np.full(UNIZERO_BATCH, step)
        with torch.no_grad():
            out = model.initial_inference(last_obs, last_actions, obs[step], timestep)
        logits = out.policy_logits.numpy().tolist()
        legal_lists = [np.flatnonzero(row).tolist() for row in legal]
        roots = mz_tree.Roots(UNIZERO_BATCH, legal_lists)
        roots.prepare_no_noise([0.0] * UNIZERO_BATCH, logits, [-1] * UNIZERO_BATCH)
        mcts.search(roots, model, out.latent_state.numpy(), [-1] * UNIZERO_BATCH, timestep)
        visits = np.zeros((UNIZERO_BATCH, UNIZERO_ACTIONS), dtype=np.int64)
        for i, dist in enumerate(roots.get_distributions()):
            visits[i, legal_lists[i]] = dist
        results[f"unizero_step{step}_visits"] = visits
        results[f"unizero_step{step}_values"] = np.asarray(roots.get_values())
        last_obs, last_actions = obs[step], executed.tolist()
    return results


def case_name(batch: int, num_simulations: int, add_noise: bool) -> str:
    return f"b{batch}_s{num_simulations}_{'noise' if add_noise else 'nonoise'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from bench.ctree_backend import CtreeMCTS

    results = {}
    for batch, sims, noise in CASES:
        cfg, model, root = parity_case(batch, sims, noise)
        out = CtreeMCTS(cfg).search(model, root, add_noise=noise, rng=np.random.default_rng(11))
        results[case_name(batch, sims, noise) + "_visits"] = out.visit_counts
        results[case_name(batch, sims, noise) + "_values"] = out.root_value
    results.update(run_lightzero_unizero_search())
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
