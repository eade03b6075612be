"""UniZero world model on text observations, plus the value/reward scaling transforms it is trained with.

``build_world_model(cfg)`` returns a ``lzero.model.unizero_model.UniZeroModel`` whose representation network is
our :class:`~lzero_ext.policy.text_encoder.TextObservationEncoder`. LightZero's own ``obs_type='text'`` branch
would load a pretrained HF encoder by path (a download), so :class:`TextUniZeroModel` repeats that branch's three
lines with our encoder; everything else (``initial_inference``, ``recurrent_inference``, ``world_model``,
``tokenizer``) is LightZero's code unchanged. UniZero's loss needs no observation decoder for text
(``latent_recon_loss`` is a constant zero there), so none is built.

The transforms (MuZero's ``h``/``h^-1`` and the two-hot ``phi`` projection) live in ``lzero.policy`` upstream,
which imports LightZero's compiled tree; they are re-implemented here so this module imports on Python 3.12
without the tree. ``tests/policy`` checks them against LightZero's.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
from ding.utils import MODEL_REGISTRY
from easydict import EasyDict
from lzero.model.unizero_model import UniZeroModel
from lzero.model.unizero_world_models.tokenizer import Tokenizer
from lzero.model.unizero_world_models.world_model import WorldModel

from lzero_ext.policy.text_encoder import TextObservationEncoder
from lzero_ext.utils.config import merge_strict
from lzero_ext.utils.value_transform import support_logits_to_scalar, support_size

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------
@MODEL_REGISTRY.register('priorzero_text_unizero')
class TextUniZeroModel(UniZeroModel):
    """``UniZeroModel`` for token-id observations with a trainable, download-free text encoder (or a local
    pretrained one, ``encoder.pretrained``).

    It is a ``UniZeroModel`` (same inference API and attributes); only construction differs, because the parent's
    text branch insists on loading a pretrained HF encoder.
    """

    config = dict(
        # (int) Token vocabulary size of the observation tokenizer.
        vocab_size=4096,
        # (int) Observation length in tokens (the env's padded length L).
        max_seq_len=512,
        # (int) Padding token id of the observation tokenizer.
        pad_token_id=0,
        # (int) Number of discrete actions A (the env's max_action_num).
        action_space_size=20,
        # (int) Latent / transformer width of the world model.
        embed_dim=256,
        # (int) Transformer layers of the world model.
        num_layers=2,
        # (int) Attention heads of the world model (must divide embed_dim).
        num_heads=8,
        # (int) SimNorm group size of latents (must divide embed_dim).
        group_size=8,
        # (float) Dropout of embeddings, residuals and attention in the world model.
        dropout=0.1,
        # (int) Value/reward support is [-support_scale, support_scale] in unit bins (2*scale+1 bins).
        support_scale=50,
        # (int) Training unroll length T; sets the transformer's max_blocks (UniZero: max_blocks = num_unroll_steps).
        num_unroll_steps=10,
        # (int) Past (obs, action) pairs kept as context during search (context_length = 2 * this).
        infer_context_length=4,
        # (int) Number of parallel environments the inference KV caches are sized for.
        env_num=8,
        # (int) MCTS simulations per search; sizes the recurrent-inference KV pool.
        num_simulations=25,
        # (int) Maximum number of cached KV entries during search.
        max_cache_size=5000,
        # (float) Weight of the policy-entropy bonus inside UniZero's policy loss.
        policy_entropy_weight=1e-4,
        # (str) Next-latent loss: 'mse' (PriorZero reference) or 'group_kl' (UniZero default).
        predict_latent_loss_type='mse',
        # (float) Discount applied across unroll steps when averaging losses (UniZero world_model_cfg.gamma).
        loss_discount=1.0,
        # (str) Device: 'cpu' or 'cuda' (falls back to cpu if CUDA is unavailable, like LightZero).
        device='cpu',
        # (dict) The text encoder (see TextObservationEncoder.config); vocab/seq/pad/embed/group keys are filled in.
        # pretrained: None (learned from scratch) or 'minilm-l6' / a local HF dir (then the observation tokenizer is
        # that encoder's: priorzero_config derives env.tokenizer_path); freeze: keep the pretrained weights fixed.
        encoder=dict(hidden_dim=128, num_layers=1, num_heads=4, dropout=0.0, length_buckets=4,
                     attention_kernels='no_cudnn', packed_attention='auto', deduplicate=True, pretrained=None,
                     freeze=True),
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        cfg = merge_strict(self.default_config(), cfg, where="world_model")
        _validate_model_config(cfg)
        # Skip UniZeroModel.__init__ on purpose: its text branch downloads an encoder. Mirror it with ours.
        nn.Module.__init__(self)
        self.cfg = cfg
        self.action_space_size = cfg.action_space_size
        self.activation = nn.GELU(approximate='tanh')
        self.downsample = False
        self.representation_network = TextObservationEncoder(_encoder_config(cfg))
        self.tokenizer = Tokenizer(encoder=self.representation_network, decoder_network=None, with_lpips=False)
        self.world_model = WorldModel(config=transformer_config(cfg), tokenizer=self.tokenizer)
        logger.info(
            "Text UniZero world model: %d parameters (%d in the text encoder)",
            sum(p.numel() for p in self.parameters()),
            sum(p.numel() for p in self.representation_network.parameters()),
        )


def _encoder_config(cfg: EasyDict) -> dict:
    return dict(
        cfg.encoder,
        vocab_size=cfg.vocab_size,
        max_seq_len=cfg.max_seq_len,
        pad_token_id=cfg.pad_token_id,
        embed_dim=cfg.embed_dim,
        group_size=cfg.group_size,
    )


def transformer_config(cfg: EasyDict) -> EasyDict:
    """The ``world_model_cfg`` LightZero's ``WorldModel`` reads, derived from our smaller config."""
    return EasyDict(
        obs_type='text',
        continuous_action_space=False,
        tokens_per_block=2,
        max_blocks=cfg.num_unroll_steps,
        max_tokens=2 * cfg.num_unroll_steps,
        context_length=2 * cfg.infer_context_length,
        num_unroll_steps=cfg.num_unroll_steps,
        gru_gating=False,
        device=cfg.device,
        analysis_sim_norm=False,
        analysis_dormant_ratio=False,
        dormant_threshold=0.025,
        action_space_size=cfg.action_space_size,
        group_size=cfg.group_size,
        attention='causal',
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        embed_dim=cfg.embed_dim,
        embed_pdrop=cfg.dropout,
        resid_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        support_size=support_size(cfg.support_scale),
        max_cache_size=cfg.max_cache_size,
        env_num=cfg.env_num,
        num_simulations=cfg.num_simulations,
        latent_recon_loss_weight=0.0,
        perceptual_loss_weight=0.0,
        policy_entropy_weight=cfg.policy_entropy_weight,
        predict_latent_loss_type=cfg.predict_latent_loss_type,
        gamma=cfg.loss_discount,
        rotary_emb=False,
        rope_theta=10000,
        max_seq_len=8192,
        norm_type='LN',
    )


def _validate_model_config(cfg: EasyDict) -> None:
    if cfg.device not in ('cpu', 'cuda') and not str(cfg.device).startswith('cuda:'):
        raise ValueError(f"world_model.device must be 'cpu' or 'cuda', got {cfg.device!r}")
    if cfg.embed_dim % cfg.num_heads != 0:
        raise ValueError(f"world_model.embed_dim={cfg.embed_dim} must be divisible by num_heads={cfg.num_heads}")
    if cfg.embed_dim % cfg.group_size != 0:
        raise ValueError(f"world_model.embed_dim={cfg.embed_dim} must be divisible by group_size={cfg.group_size}")
    if cfg.predict_latent_loss_type not in ('mse', 'group_kl'):
        raise ValueError(
            f"world_model.predict_latent_loss_type must be 'mse' or 'group_kl', got {cfg.predict_latent_loss_type!r}"
        )
    if cfg.action_space_size < 1 or cfg.infer_context_length < 1:
        raise ValueError("world_model.action_space_size and infer_context_length must be >= 1")
    if cfg.num_unroll_steps < 4:
        # LightZero's compute_loss indexes the middle step of the (T-1)-step latent loss; T < 4 goes out of range.
        raise ValueError(f"world_model.num_unroll_steps must be >= 4, got {cfg.num_unroll_steps}")


def build_world_model(cfg: Mapping[str, Any]) -> UniZeroModel:
    """Build the text UniZero world model on ``cfg.device`` (see :attr:`TextUniZeroModel.config` for the keys)."""
    model = TextUniZeroModel(cfg)
    return model.to(model.world_model.device)


def value_from_logits(logits: torch.Tensor, support_scale: int) -> np.ndarray:
    """Scalar values ``[N]`` (float32 numpy) from categorical value/reward logits ``[N, support]``."""
    return support_logits_to_scalar(logits.detach(), support_scale).cpu().numpy()
