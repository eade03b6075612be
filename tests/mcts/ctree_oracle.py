"""Run LightZero's C++ tree on the parity cases and save its results (run by test_parity_ctree.py in a subprocess).

The subprocess is started with ``LD_PRELOAD`` of a two-line C library whose ``rand()`` returns 0, so the C++ tree
breaks ties by taking the first tied action (its ``srand(time)``/``rand()`` tie-breaking is otherwise
unreproducible); our search does the same with ``tie_break='first'``.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from lzero_ext.mcts.search import RootInput, SearchConfig
from lzero_ext.mcts.toy_models import ToyDynamicsModel

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


def case_name(batch: int, num_simulations: int, add_noise: bool) -> str:
    return f"b{batch}_s{num_simulations}_{'noise' if add_noise else 'nonoise'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from lzero_ext.mcts.ctree_backend import CtreeMCTS

    results = {}
    for batch, sims, noise in CASES:
        cfg, model, root = parity_case(batch, sims, noise)
        out = CtreeMCTS(cfg).search(model, root, add_noise=noise, rng=np.random.default_rng(11))
        results[case_name(batch, sims, noise) + "_visits"] = out.visit_counts
        results[case_name(batch, sims, noise) + "_values"] = out.root_value
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
