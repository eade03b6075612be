"""Small deterministic models implementing :class:`~lzero_ext.mcts.search.SearchModel`, for tests and benchmarks.

``ToyDynamicsModel`` is a fixed random nonlinear latent dynamics whose outputs depend only on (parent latent,
action), so any two correct searches driven by it must agree; its outputs are continuous, so exact ties are
practically impossible. ``TableModel`` returns precomputed outputs and costs almost nothing, to time the tree alone.

Not part of the library: benchmarks import it as ``toy_models`` (their folder is on ``sys.path``), tests as
``bench.toy_models`` (from the repository root).
"""
from __future__ import annotations

import numpy as np

from lzero_ext.mcts.search import RecurrentOutput, RootInput


class ToyDynamicsModel:
    """``z' = tanh(W[a] z + c[a])``; reward, value and policy logits are fixed projections of ``z'``.

    ``root_action_bonus`` ([A]) is added to the reward of each action taken at the root (search depth 1), to make
    some root actions clearly better than others.
    """

    uses_parent_latents = True

    def __init__(
        self,
        num_actions: int,
        latent_dim: int = 8,
        seed: int = 0,
        root_action_bonus: np.ndarray | None = None,
        reward_scale: float = 0.5,
        value_scale: float = 1.0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.num_actions, self.latent_dim = num_actions, latent_dim
        self.weights = rng.normal(0, 1.0 / np.sqrt(latent_dim), size=(num_actions, latent_dim, latent_dim))
        self.bias = rng.normal(0, 0.3, size=(num_actions, latent_dim))
        self.reward_proj = rng.normal(0, 1, size=latent_dim)
        self.value_proj = value_scale * rng.normal(0, 1, size=latent_dim)
        self.policy_proj = rng.normal(0, 1, size=(latent_dim, num_actions))
        self.reward_scale = reward_scale
        self.root_action_bonus = (
            np.zeros(num_actions) if root_action_bonus is None else np.asarray(root_action_bonus, dtype=float)
        )
        self.calls = 0

    def root(self, batch: int, seed: int = 1, legal_mask: np.ndarray | None = None) -> RootInput:
        """Random root latents with the model's own value and policy logits."""
        latent = np.random.default_rng(seed).normal(size=(batch, self.latent_dim))
        mask = np.ones((batch, self.num_actions), dtype=bool) if legal_mask is None else legal_mask
        return RootInput(
            latent=latent, policy_logits=latent @ self.policy_proj, value=latent @ self.value_proj, legal_mask=mask
        )

    def recurrent_inference(
        self,
        parent_latents: np.ndarray,
        actions: np.ndarray,
        simulation_index: int,
        search_depth: list[int],
        parent_nodes: np.ndarray,
    ) -> RecurrentOutput:
        self.calls += 1
        pre = np.einsum("bij,bj->bi", self.weights[actions], parent_latents) + self.bias[actions]
        latent = np.tanh(pre)
        at_root = np.asarray(search_depth) == 1
        reward = self.reward_scale * np.sin(latent @ self.reward_proj) + at_root * self.root_action_bonus[actions]
        return RecurrentOutput(
            latent=latent, reward=reward, value=latent @ self.value_proj, policy_logits=latent @ self.policy_proj
        )


class TableModel:
    """Returns precomputed random outputs (indexed by simulation), so a search's time is the tree's own cost."""

    uses_parent_latents = True

    def __init__(self, batch: int, num_actions: int, num_simulations: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.latent = np.zeros((batch, 1), dtype=np.float32)
        self.reward = rng.normal(0, 0.1, size=(num_simulations, batch))
        self.value = rng.normal(0, 1, size=(num_simulations, batch))
        self.policy_logits = rng.normal(0, 1, size=(num_simulations, batch, num_actions))

    def root(self, legal_mask: np.ndarray) -> RootInput:
        batch, num_actions = legal_mask.shape
        logits = np.random.default_rng(123).normal(size=(batch, num_actions))
        return RootInput(latent=self.latent, policy_logits=logits, value=np.zeros(batch), legal_mask=legal_mask)

    def recurrent_inference(
        self,
        parent_latents: np.ndarray,
        actions: np.ndarray,
        simulation_index: int,
        search_depth: list[int],
        parent_nodes: np.ndarray,
    ) -> RecurrentOutput:
        return RecurrentOutput(
            latent=self.latent,
            reward=self.reward[simulation_index],
            value=self.value[simulation_index],
            policy_logits=self.policy_logits[simulation_index],
        )
