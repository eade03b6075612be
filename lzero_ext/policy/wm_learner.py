"""UniZero's learn step for the text world model, without ``lzero.policy`` (which needs the compiled tree).

It follows ``UniZeroPolicy._init_learn`` / ``_forward_learn`` of LightZero 0.2.0:

* targets: rewards and n-step values go through ``h`` then the two-hot ``phi`` onto the categorical support;
  the policy target is the MCTS visit distribution; windows of ``num_unroll_steps`` with ``mask_padding``;
* loss: ``WorldModel.compute_loss`` with the *target* model's encoder giving the next-latent labels;
* optimiser: AdamW, weight decay only on >=2-D tensors (nanoGPT grouping), betas (0.9, 0.95);
  gradient-norm clipping;
* target network: momentum (soft) update every step with ``target_update_theta``, or a hard copy every
  ``target_update_freq`` steps.

Speed on CUDA (``mixed_precision``, ``tf32``, ``fused_adamw``): the forward passes (the loss, the target network's
labels and bootstrap values) run under bf16 autocast with fp32 master weights and fp32 optimiser state (no loss
scaling needed for bf16); the remaining fp32 matmuls may use TF32; AdamW uses its fused kernel. On the CPU the
default stays plain fp32.

One deliberate difference: LightZero hard-codes the loss weights inside ``LossWithIntermediateLosses``
(obs 10, value 0.5, reward 1, policy 1) and ignores the config's; here the total is rebuilt from the
intermediate losses with the weights of this learner's config (defaults = LightZero's effective values).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
from easydict import EasyDict

from lzero_ext.buffer.game_buffer import AdvantageRequest, BootstrapRequest, WorldModelBatch
from lzero_ext.utils.value_transform import scalar_to_categorical, support_logits_to_scalar
from lzero_ext.utils.config import merge_strict
from lzero_ext.utils.lr_schedule import build_scheduler

logger = logging.getLogger(__name__)

MIN_UNROLL_STEPS = 4
MIXED_PRECISION = ('auto', 'bf16', 'none')


class WorldModelLearner:
    """Trains a UniZero world model (``UniZeroModel``) on :class:`WorldModelBatch` windows."""

    config = dict(
        # (float) AdamW learning rate (UniZero default 1e-4).
        learning_rate=1e-4,
        # (str) 'constant' (UniZero), 'cosine' or 'linear' decay after warm-up, down to min_lr_ratio * learning_rate.
        lr_schedule='constant',
        # (int) Optimiser steps of linear warm-up.
        warmup_steps=0,
        # (int) Optimiser steps over which the schedule decays (the presets derive it from the run's length).
        total_steps=100000,
        # (float) Final learning rate as a fraction of learning_rate.
        min_lr_ratio=0.1,
        # (float) AdamW weight decay for >=2-D weights; biases and norms get none.
        weight_decay=1e-4,
        # (list) AdamW betas (UniZero uses nanoGPT's (0.9, 0.95)).
        betas=[0.9, 0.95],
        # (float) Max global gradient norm (UniZero grad_clip_value).
        grad_clip_value=20.0,
        # (float) Weight of the next-latent (observation) loss in the total.
        obs_loss_weight=10.0,
        # (float) Weight of the reward cross-entropy in the total.
        reward_loss_weight=1.0,
        # (float) Weight of the value cross-entropy in the total.
        value_loss_weight=0.5,
        # (float) Weight of the policy loss (CE to visit distribution minus entropy bonus) in the total.
        policy_loss_weight=1.0,
        # (str) Target network update: 'momentum' (soft, every step) or 'hard' (copy every target_update_freq).
        target_update_type='momentum',
        # (float) Soft update rate: target = (1 - theta) * target + theta * online.
        target_update_theta=0.05,
        # (int) Steps between hard target copies (only for target_update_type='hard').
        target_update_freq=100,
        # (str) Autocast of the learner's forward passes: 'auto' (bf16 on CUDA, none on CPU), 'bf16' or 'none' (fp32).
        mixed_precision='auto',
        # (bool) On CUDA, let fp32 matmuls use TF32 tensor cores (torch.set_float32_matmul_precision('high'),
        # process-wide).
        tf32=True,
        # (bool) On CUDA, use AdamW's fused kernel (CPU: the default implementation).
        fused_adamw=True,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, model: nn.Module, cfg: Mapping[str, Any] | None = None) -> None:
        self.cfg = merge_strict(self.default_config(), cfg, where="wm_learner")
        if self.cfg.target_update_type not in ('momentum', 'hard'):
            raise ValueError(f"wm_learner.target_update_type must be 'momentum' or 'hard', "
                             f"got {self.cfg.target_update_type!r}")
        if self.cfg.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"wm_learner.mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.cfg.mixed_precision!r}")
        self.model = model
        self.device = next(model.parameters()).device
        on_cuda = self.device.type == 'cuda'
        # (torch.dtype | None) autocast dtype of the forward passes; None = plain fp32.
        self.autocast_dtype = (torch.bfloat16 if self.cfg.mixed_precision == 'bf16'
                               or (self.cfg.mixed_precision == 'auto' and on_cuda) else None)
        if on_cuda and self.cfg.tf32:
            torch.set_float32_matmul_precision('high')
        self._fused = bool(on_cuda and self.cfg.fused_adamw)
        self.support_scale = (model.world_model.config.support_size - 1) // 2
        self.target_model = copy.deepcopy(model)
        self.target_model.eval()
        for p in self.target_model.parameters():
            p.requires_grad_(False)
        self.optimizer = _build_adamw(model.world_model, self.cfg, fused=self._fused)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, "wm_learner")
        self.train_steps = 0
        self.skipped_updates = 0
        # (callable | None) Data parallelism: averages gradients over ranks, (params, ok) -> all ranks ok
        # (DistContext.all_reduce_gradients); None in a single process.
        self.grad_sync: Callable[[list[nn.Parameter], bool], bool] | None = None

    # ------------------------------------------------------------------ training
    def train_step(self, batch: WorldModelBatch) -> dict[str, float]:
        """One gradient step of UniZero's losses on ``batch``; a non-finite loss skips the update.

        The model runs in train mode (dropout) for the step and is put back in the mode it was in, so a model
        shared with the search stays in eval mode.
        """
        was_training = self.model.training
        self.model.train()
        try:
            return self._train_step(batch)
        finally:
            self.model.train(was_training)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of a forward pass (``mixed_precision``), or nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _train_step(self, batch: WorldModelBatch) -> dict[str, float]:
        gpt_batch = self._to_gpt_batch(batch)
        with self._autocast():
            losses = self._compute_losses(gpt_batch)
        if losses is None:
            return self._skip("non-finite logits inside compute_loss")
        parts = {k: v.float() if torch.is_tensor(v) else v for k, v in losses.intermediate_losses.items()}
        total = (
            self.cfg.obs_loss_weight * parts['loss_obs']
            + self.cfg.reward_loss_weight * parts['loss_rewards']
            + self.cfg.value_loss_weight * parts['loss_value']
            + self.cfg.policy_loss_weight * parts['loss_policy']
        )
        if not torch.isfinite(total):
            return self._skip(f"non-finite total loss {total.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_sync is not None and not self.grad_sync(list(self.model.world_model.parameters()), True):
            return self._skip("non-finite loss on another rank", synced=True)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.world_model.parameters(), self.cfg.grad_clip_value)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(f"non-finite gradient norm {grad_norm.item()}", synced=True)
        lr = self.optimizer.param_groups[0]['lr']  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.train_steps += 1
        self._update_target()
        policy = gpt_batch['target_policy'][gpt_batch['mask_padding']]
        target_entropy = -(policy * torch.log(policy + 1e-9)).sum(-1).mean()
        names = ('total_loss', 'obs_loss', 'reward_loss', 'value_loss', 'policy_loss', 'policy_entropy',
                 'target_policy_entropy', 'latent_l2_norm', 'grad_norm')
        values = (total, parts['loss_obs'], parts['loss_rewards'], parts['loss_value'], parts['loss_policy'],
                  parts['policy_entropy'], target_entropy, parts['latent_state_l2_norms'], grad_norm)
        # one device-to-host copy for all the scalars instead of a sync per metric
        scalars = torch.stack([v.detach().float().reshape(()) for v in values]).tolist()
        return {
            **{f'wm/{name}': value for name, value in zip(names, scalars)},
            'wm/lr': lr,
            'wm/target_value_mean': float(batch.target_values[batch.mask_padding].mean()),
            'wm/skipped_updates': float(self.skipped_updates),
        }

    def _compute_losses(self, gpt_batch: dict[str, torch.Tensor]) -> Any:
        try:
            return self.model.world_model.compute_loss(
                gpt_batch, self.target_model.world_model.tokenizer, self._inverse_transform
            )
        except ValueError as err:
            # LightZero raises ValueError("NaN detected ...") on NaN logits; treat it like a non-finite loss.
            if 'NaN detected' in str(err):
                return None
            raise

    def _skip(self, why: str, synced: bool = False) -> dict[str, float]:
        """Skip this update; with data parallelism, first tell the other ranks (they wait in the gradient
        all-reduce and then skip too), unless the skip was decided after it (``synced``)."""
        if self.grad_sync is not None and not synced:
            self.grad_sync(list(self.model.world_model.parameters()), False)
        self.skipped_updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        logger.warning("World-model update skipped (%s); %d skipped so far", why, self.skipped_updates)
        return {'wm/skipped_updates': float(self.skipped_updates)}

    def _inverse_transform(self, logits: torch.Tensor) -> torch.Tensor:
        return support_logits_to_scalar(logits, self.support_scale).unsqueeze(-1)

    def _to_gpt_batch(self, batch: WorldModelBatch) -> dict[str, torch.Tensor]:
        """UniZero's ``batch_for_gpt``: T observations, T actions and the T targets after them."""
        if not batch.mask_padding.any():
            raise ValueError("WorldModelBatch has no valid step (mask_padding is all False)")
        T, device = batch.unroll_steps, self.device
        if T < MIN_UNROLL_STEPS:
            raise ValueError(
                f"WorldModelBatch has {T} unroll steps; LightZero's compute_loss indexes a middle step of the "
                f"latent loss and needs num_unroll_steps >= {MIN_UNROLL_STEPS}"
            )

        def as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

        rewards = as_tensor(batch.rewards, torch.float32)
        values = as_tensor(batch.target_values, torch.float32)
        mask = as_tensor(batch.mask_padding, torch.bool)
        return {
            'observations': as_tensor(batch.observations[:, :T], torch.long),
            'actions': as_tensor(batch.actions, torch.long),
            'timestep': as_tensor(batch.timesteps[:, :T], torch.long),
            'rewards': scalar_to_categorical(self.support_scale, rewards),
            'target_value': scalar_to_categorical(self.support_scale, values),
            'target_policy': as_tensor(batch.target_policies, torch.float32),
            'mask_padding': mask,
            'ends': torch.zeros_like(mask, dtype=torch.long),
        }

    def _update_target(self) -> None:
        with torch.no_grad():
            if self.cfg.target_update_type == 'hard':
                if self.train_steps % self.cfg.target_update_freq == 0:
                    self.target_model.load_state_dict(self.model.state_dict())
                return
            theta = self.cfg.target_update_theta
            online = dict(self.model.named_parameters())
            targets, sources = [], []
            for name, target_param in self.target_model.named_parameters():
                targets.append(target_param)
                sources.append(online[name].detach())
            # target = (1 - theta) * target + theta * online, as one multi-tensor kernel per op instead of two per tensor
            torch._foreach_mul_(targets, 1 - theta)
            torch._foreach_add_(targets, sources, alpha=theta)

    # ------------------------------------------------------------------ target values for the buffer
    @torch.no_grad()
    def target_value_fn(self, request: BootstrapRequest) -> np.ndarray:
        """Values ``[B, T]`` of the bootstrap windows from the target model (UniZero's value-target inference)."""
        return self._sequence_values(self.target_model, request.observations, request.actions, request.timesteps)

    @torch.no_grad()
    def advantage_fn(self, request: AdvantageRequest) -> np.ndarray:
        """TD target minus value, both from the target model (reference PriorZero's LLM advantage)."""
        obs = np.stack([request.observations, request.bootstrap_observations], axis=0)
        actions = np.zeros((2, len(request.actions), 1), dtype=np.int64)
        actions[0, :, 0] = request.actions
        timesteps = np.stack([request.timesteps, request.bootstrap_timesteps], axis=0)[..., None]
        values = self._sequence_values(self.target_model, obs.reshape(-1, 1, obs.shape[-1]),
                                       actions.reshape(-1, 1), timesteps.reshape(-1, 1)).reshape(2, -1)
        target = request.discounted_rewards + request.bootstrap_discounts * values[1]
        return (target - values[0]).astype(np.float32)

    def _sequence_values(
        self, model: nn.Module, observations: np.ndarray, actions: np.ndarray, timesteps: np.ndarray
    ) -> np.ndarray:
        world_model = model.world_model
        obs = torch.as_tensor(observations, dtype=torch.long, device=self.device)
        act = torch.as_tensor(actions, dtype=torch.long, device=self.device).unsqueeze(-1)
        with self._autocast():
            embeddings = world_model.tokenizer.encode_to_obs_embeddings(obs)
            outputs = world_model.forward(
                {'obs_embeddings_and_act_tokens': (embeddings, act)},
                start_pos=torch.as_tensor(timesteps, device=self.device),
            )
        logits = outputs.logits_value.float().reshape(-1, outputs.logits_value.shape[-1])
        values = support_logits_to_scalar(logits, self.support_scale)
        return values.reshape(observations.shape[0], observations.shape[1]).cpu().numpy()

    def after_training_burst(self) -> None:
        """Refresh positional-embedding caches and drop KV caches, as UniZero does after its updates."""
        for model in (self.model, self.target_model):
            if not model.world_model.config.rotary_emb:
                model.world_model.precompute_pos_emb_diff_kv()
            model.world_model.clear_caches()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return dict(
            model=self.model.state_dict(),
            target_model=self.target_model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            train_steps=self.train_steps,
            skipped_updates=self.skipped_updates,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state['model'])
        self.target_model.load_state_dict(state['target_model'])
        self.optimizer.load_state_dict(state['optimizer'])
        for group in self.optimizer.param_groups:  # a checkpoint from another device keeps this device's kernel
            group['fused'] = self._fused
            if self._fused:
                group['foreach'] = None
        self.train_steps = int(state['train_steps'])
        self.skipped_updates = int(state['skipped_updates'])
        if 'scheduler' in state:
            self.scheduler.load_state_dict(state['scheduler'])
        else:  # a checkpoint from before the schedule existed: continue the schedule at its optimiser step
            self.scheduler.last_epoch = self.train_steps
            factor = self.scheduler.lr_lambdas[0](self.train_steps)
            for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group['lr'] = base_lr * factor


def _build_adamw(module: nn.Module, cfg: EasyDict, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with decay on matrices/embeddings only (nanoGPT grouping, as UniZero's optimiser); ``fused``: one
    fused CUDA kernel for the whole step."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {'params': [p for p in params if p.dim() >= 2], 'weight_decay': cfg.weight_decay},
        {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.betas), fused=fused or None)
