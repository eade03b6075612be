"""Drive LightZero's UniZero world model (``lzero.model.unizero_model.UniZeroModel``) from :class:`BatchedMCTS`.

The calls replicate LightZero 0.2.0's own UniZero search (``UniZeroPolicy._forward_collect`` +
``UniZeroMCTSCtree.search``) so the world model sees exactly the inputs it sees there:

* root: ``model.initial_inference(last_obs, last_actions, obs, timesteps)``; on the first step of an episode
  ``last_actions`` are all -1 and the world model starts a fresh KV cache; otherwise it looks up the KV cache it
  stored for each env's previous root (keyed by a hash of ``last_obs``'s embedding) and appends the last action and
  the new observation. ``forward_initial_inference`` also empties the recurrent-inference cache of the last search.
* each simulation: ``model.recurrent_inference([(parent_latents_numpy, actions_tensor)], simulation_index,
  search_depth, timesteps)``; the world model finds each parent's KV cache by hashing the numpy latent (root caches
  per env index, inner-node caches in one dict), appends (action, next latent) and caches the result.
* categorical value/reward heads become scalars with the world model's support (``support_size`` bins), using our
  re-implementation of LightZero's inverse scalar transform (``scalar_transform.py``).

Only ``lzero.model`` is imported (it works on Python 3.12); never ``lzero.mcts`` or ``lzero.policy``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from lzero_ext.mcts.scalar_transform import support_logits_to_scalar, support_size_to_scale
from lzero_ext.mcts.search import RecurrentOutput, RootInput

logger = logging.getLogger(__name__)


@dataclass
class RootInference:
    """The world model's view of the B roots, ready for root-prior mixing and :class:`RootInput`."""

    latent: np.ndarray  # [B, 1, E] float32; numpy because the world model keys its KV caches by hashing it
    value: np.ndarray  # [B] scalar value
    policy_logits: np.ndarray  # [B, A] world-model policy logits

    def to_root_input(self, policy_logits: np.ndarray, legal_mask: np.ndarray) -> RootInput:
        """Root input for the search with the caller's (mixed) prior logits."""
        return RootInput(latent=self.latent, policy_logits=policy_logits, value=self.value, legal_mask=legal_mask)


class UniZeroSearchModel:
    """:class:`~lzero_ext.mcts.search.SearchModel` over a ``UniZeroModel``, stateful like UniZero's world model.

    Call :meth:`initial_inference` once per search (it sets the roots' KV caches and timesteps), then hand this
    object to ``BatchedMCTS.search``. Root ``i`` must always be the same environment ``i`` (the world model keeps
    per-env caches), and B must not exceed the world model's ``env_num``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.world_model = model.world_model
        self.device = next(model.parameters()).device
        wm_cfg = self.world_model.config
        self.support_scale = support_size_to_scale(wm_cfg.support_size)
        self.env_num = int(wm_cfg.env_num)
        self.recurrent_pool_size = len(self.world_model.shared_pool_recur_infer)
        self._timesteps: np.ndarray | None = None
        self._batch = 0

    def clear_caches(self) -> None:
        """Forget every cached KV (UniZero does this every 200 collect steps and on resets) to bound memory."""
        for env_cache in self.world_model.past_kv_cache_init_infer_envs:
            env_cache.clear()
        self.world_model.past_kv_cache_recurrent_infer.clear()
        self.world_model.keys_values_wm_list.clear()

    @torch.no_grad()
    def initial_inference(
        self,
        obs: torch.Tensor,
        last_obs: torch.Tensor | None = None,
        last_actions: np.ndarray | None = None,
        timesteps: np.ndarray | None = None,
    ) -> RootInference:
        """Encode the B current observations with their context, as UniZero's collect/eval step does.

        Args:
            obs: ``[B, *obs_shape]`` current observations.
            last_obs: ``[B, *obs_shape]`` the observations of the previous search (zeros at an episode's start).
            last_actions: ``[B]`` the actions executed since then; -1 for all roots at an episode's start. If only
                some roots are at their start, their -1 becomes action 0 (LightZero cannot start a fresh cache for
                part of a batch either; it reuses the stale action of that env).
            timesteps: ``[B]`` step index within the episode (UniZero's ``start_pos``); zeros if None.
        """
        batch = obs.shape[0]
        if batch > self.env_num:
            raise ValueError(f"{batch} roots but the world model was built with env_num={self.env_num}")
        obs = obs.to(self.device)
        last_obs = torch.zeros_like(obs) if last_obs is None else last_obs.to(self.device)
        actions = np.full(batch, -1, dtype=np.int64) if last_actions is None else np.asarray(last_actions, dtype=np.int64)
        if (actions == -1).any() and not (actions == -1).all():
            logger.debug("Roots %s start an episode inside a continuing batch", np.flatnonzero(actions == -1).tolist())
            actions = np.where(actions == -1, 0, actions)
        self._timesteps = np.zeros(batch, dtype=np.int64) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
        self._batch = batch
        self.model.eval()
        out = self.model.initial_inference(last_obs, actions.tolist(), obs, self._timesteps)
        return RootInference(
            latent=out.latent_state.detach().cpu().numpy(),
            value=support_logits_to_scalar(out.value, self.support_scale).cpu().numpy().astype(np.float64),
            policy_logits=out.policy_logits.detach().float().cpu().numpy(),
        )

    @torch.no_grad()
    def recurrent_inference(
        self,
        parent_latents: np.ndarray,
        actions: np.ndarray,
        simulation_index: int,
        search_depth: list[int],
        parent_nodes: np.ndarray,
    ) -> RecurrentOutput:
        """One batched dynamics + prediction step, exactly as ``UniZeroMCTSCtree.search`` calls it."""
        if self._timesteps is None or len(actions) != self._batch:
            raise RuntimeError("Call initial_inference for these roots before searching")
        if (simulation_index + 1) * self._batch > self.recurrent_pool_size:
            raise ValueError(
                f"Simulation {simulation_index} with {self._batch} roots overflows the world model's recurrent KV pool "
                f"({self.recurrent_pool_size} = num_simulations x env_num in its config); raise world_model_cfg.num_simulations"
            )
        action_tensor = torch.from_numpy(np.asarray(actions, dtype=np.int64)).to(self.device)
        history = [(np.ascontiguousarray(parent_latents), action_tensor)]
        out = self.model.recurrent_inference(history, simulation_index, search_depth, self._timesteps)
        return RecurrentOutput(
            latent=out.latent_state.detach().cpu().numpy(),
            reward=support_logits_to_scalar(out.reward, self.support_scale).cpu().numpy().astype(np.float64),
            value=support_logits_to_scalar(out.value, self.support_scale).cpu().numpy().astype(np.float64),
            policy_logits=out.policy_logits.detach().float().cpu().numpy(),
        )


def unizero_world_model_config(
    num_actions: int,
    env_num: int,
    num_simulations: int,
    embed_dim: int = 768,
    num_layers: int = 2,
    num_heads: int = 8,
    device: str = "cpu",
) -> dict:
    """A ``world_model_cfg`` for ``UniZeroModel`` with LightZero 0.2.0's UniZero defaults (vector observations).

    The defaults are the sizes LightZero's Jericho UniZero config uses (embed 768, 2 layers); tests pass tiny ones.
    """
    return dict(
        continuous_action_space=False, tokens_per_block=2, max_blocks=10, max_tokens=20, context_length=8,
        gru_gating=False, device=device, analysis_sim_norm=False, analysis_dormant_ratio=False,
        action_space_size=num_actions, group_size=8, attention="causal", num_layers=num_layers, num_heads=num_heads,
        embed_dim=embed_dim, embed_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1, support_size=101, max_cache_size=5000,
        env_num=env_num, latent_recon_loss_weight=0.0, perceptual_loss_weight=0.0, policy_entropy_weight=0.0,
        predict_latent_loss_type="group_kl", obs_type="vector", gamma=1, dormant_threshold=0.025, rotary_emb=False,
        rope_theta=10000, max_seq_len=8192, num_simulations=num_simulations,
    )


def build_unizero_model(
    obs_dim: int, world_model_cfg: dict, seed: int = 0, randomize_heads: bool = True
) -> torch.nn.Module:
    """Build a vector-observation ``UniZeroModel`` (for tests and benchmarks).

    LightZero zero-initialises the last layer of every head, so a fresh model predicts uniform policies and zero
    values; ``randomize_heads`` re-draws those layers so searches see distinct, tie-free outputs.
    """
    from easydict import EasyDict
    from lzero.model.unizero_model import UniZeroModel

    torch.manual_seed(seed)
    model = UniZeroModel(
        observation_shape=obs_dim,
        action_space_size=world_model_cfg["action_space_size"],
        world_model_cfg=EasyDict(world_model_cfg),
        norm_type="LN",
    )
    if randomize_heads:
        generator = torch.Generator().manual_seed(seed + 1)
        wm = model.world_model
        for head in (wm.head_policy, wm.head_value, wm.head_rewards):
            last = [m for m in head.head_module if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 0.5)
                last.bias.copy_(torch.randn(last.bias.shape, generator=generator) * 0.5)
    return model.eval()
