"""ORZ's ``RayPPOTrainer`` as an LLM update (:class:`OrzTrainerHook`), and the choice between it and the built-in one.

The update interface and the built-in update live in :mod:`lzero_ext.llm.update`; whether ORZ is usable here in
:mod:`lzero_ext.orz.probe`; the exp config and the fed trainer class it builds in :mod:`lzero_ext.orz.runtime`.

``policy.llm.use_orz_trainer=True`` trains the LLM through Open-Reasoner-Zero's trainer *in-process*, one PPO step
per call on our pre-collected data: its ``generate_vllm`` returns the responses the search executed (carried in the
extras by :mod:`lzero_ext.orz.adapter`) instead of sampling, and its ``custom_reward_fn`` puts our reward on the last
response token (with γ=λ=1 and no critic every response token then gets it). ``RayPPOTrainer.train()`` is never
called: it is a whole multi-episode run that owns its own dataloader.

One owner of the weights: ORZ's policy actors hold them (ZeRO-3 shards) and sync ORZ's own vLLM engines. After each
update the hook exports them (``async_save_model``) and the attached priors ``sync_from`` the hook, exactly as they
do from ``LLMTrainer`` (``merged_state_dict()`` + ``version``), so MCTS acts with the new weights and version.

Without a usable ORZ stack the start fails with ONE ``ImportError`` listing every missing part, unless
``allow_builtin_trainer_fallback=True``: then a warning is logged and the built-in trainer is used, and its metrics
carry ``llm/backend_fallback = 1`` so a run cannot silently change algorithm. ORZ is imported only on its path.

Resuming is not supported with ORZ: its policy weights and optimiser live in ORZ's actors (ZeRO-3 shards), which
PriorZero's checkpoints do not hold, so :meth:`OrzTrainerHook.load_state_dict` raises one clear error saying what
to do instead (export the LLM and start from it).

Not run here: ORZ needs CUDA, vLLM 0.6.x, DeepSpeed and Ray; only the contract is tested, against a stand-in.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lzero_ext.llm.loading import load_tokenizer, resolve_model_path
from lzero_ext.llm.prompt import PromptBuilder
from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.types import LLMSample, WeightsFollower
from lzero_ext.llm.update import RESUME_FROM_EXPORT_HINT, BuiltinLLMUpdate, LLMUpdate
from lzero_ext.orz.adapter import check_reward_source, segments_to_orz_samples
from lzero_ext.orz.probe import (
    ORZ_TRAINER_CLASS, ORZ_TRAINER_MODULE, OrzUnavailableError, probe_orz_stack, unavailable_message,
)
from lzero_ext.orz.runtime import (
    FORCED_EXP_FIELDS, PlaceholderPromptDataset, RuntimeBuilder, build_orz_runtime, check_exp_config,
    fed_trainer_class,
)
from lzero_ext.utils.config import merge_strict

logger = logging.getLogger(__name__)

ORZ_RESUME_HINT = RESUME_FROM_EXPORT_HINT + " (ORZ's exp.pretrain defaults to the trainer's model_path)."


class OrzTrainerHook:
    """Drives ORZ's ``RayPPOTrainer`` one PPO step per :meth:`train` call on PriorZero's samples (module docstring)."""

    backend = "orz"

    config = dict(
        # (str) Reward given to ORZ: 'advantage' (what our RL loss uses; the only source, 'return' was removed).
        reward_source="advantage",
        # (int) Export ORZ's weights to the attached priors every this many updates (1 = after every update).
        weights_sync_every=1,
        # (bool) Keep ORZ's exported HF directories (<save_path>/iter<N>/policy) instead of deleting them after loading.
        keep_weight_exports=False,
        # (dict) Fields of ORZ's BasePPOExpConfig (plus PLAYGROUND_EXP_FIELDS: packing_max_len, use_orm_score, top_k,
        # stop), passed through; unset ones get one-GPU defaults from the hook. n_samples_per_prompt,
        # use_compute_reward_fn, reward_pretrain, critic_pretrain, gamma and lambd are fixed by the hook
        # (FORCED_EXP_FIELDS). Names are open when the config is built (ORZ's config is external and unpinned, and ORZ
        # is not importable there): check_exp_config checks the forced values and the types of the fields the hook
        # sets; build_orz_runtime refuses a name that is neither a BasePPOExpConfig field nor a playground field.
        exp=dict(),
    )

    @classmethod
    def default_config(cls):
        return merge_strict(cls.config, {}, where="policy.llm.orz")

    def __init__(self, cfg: Mapping | None, prompt_builder: PromptBuilder, model_path: Path, append_eos: bool,
                 runtime_builder: RuntimeBuilder = build_orz_runtime) -> None:
        self.cfg = merge_strict(self.config, cfg, where="policy.llm.orz", validators={"exp": check_exp_config})
        check_reward_source(self.cfg.reward_source, "policy.llm.orz.reward_source")
        if self.cfg.weights_sync_every < 1:
            raise ValueError(f"policy.llm.orz.weights_sync_every must be >= 1, got {self.cfg.weights_sync_every}")
        self.prompt_builder = prompt_builder
        self.append_eos = append_eos
        self.exp_fields = self._exp_fields(model_path)
        self.version = 0
        self.model = None  # no local module: priors copy merged_state_dict() (TransformersPrior.sync_from)
        self._weights: dict[str, torch.Tensor] | None = None
        self._priors: list[WeightsFollower] = []
        trainer_module = importlib.import_module(ORZ_TRAINER_MODULE)
        trainer_cls = fed_trainer_class(getattr(trainer_module, ORZ_TRAINER_CLASS))
        self._loop = asyncio.new_event_loop()
        self.trainer = self._loop.run_until_complete(
            runtime_builder(trainer_cls, self.exp_fields, prompt_builder.tokenizer, PlaceholderPromptDataset()))
        self.trainer.global_step = 0  # set by RayPPOTrainer.train(), which the hook never calls
        if self.trainer.critic_model is not None:
            raise ValueError("the ORZ hook trains without a critic, but ORZ built one (set exp.critic_pretrain='')")

    @classmethod
    def from_llm_config(cls, llm_cfg: Mapping, runtime_builder: RuntimeBuilder = build_orz_runtime) -> "OrzTrainerHook":
        """Build from ``policy.llm``: the prompt settings come from ``policy.llm.trainer`` (shared with the prior)."""
        trainer_cfg = llm_cfg["trainer"]
        model_path = resolve_model_path(trainer_cfg["model_path"])
        builder = PromptBuilder(load_tokenizer(model_path), trainer_cfg["max_prompt_tokens"],
                                trainer_cfg["history_turns"], trainer_cfg["system_prompt"])
        return cls(llm_cfg["orz"], builder, model_path, trainer_cfg["append_eos"], runtime_builder)

    def _exp_fields(self, model_path: Path) -> dict[str, Any]:
        user = dict(self.cfg.exp)  # checked by check_exp_config when self.cfg was merged
        prompt_max_len = user.get("prompt_max_len", self.prompt_builder.max_prompt_tokens)
        generate_max_len = user.get("generate_max_len", 64)
        save_path = user.get("save_path") or tempfile.mkdtemp(prefix="priorzero-orz-")
        defaults = dict(
            pretrain=str(model_path), save_path=save_path, ckpt_path=save_path,
            tensorboard_log_dir=str(Path(save_path) / "tensorboard"),
            prompt_max_len=prompt_max_len, generate_max_len=generate_max_len,
            packing_max_len=prompt_max_len + generate_max_len,
            colocate_all=True, actor_num_nodes=1, actor_num_gpus_per_node=1, ref_num_nodes=1,
            ref_num_gpus_per_node=1, vllm_num_engines=1, micro_train_batch_size=1, micro_forward_batch_size=1,
            # our advantages are in game points: ORZ z-scores them over the batch, as LLMTrainer's default 'batch'
            advantage_normalize=True, use_orm_score=False, top_k=-1, stop=[],
        )
        return {**defaults, **user, **FORCED_EXP_FIELDS}

    # ------------------------------------------------------------------ training
    def train(self, samples: Sequence[LLMSample], weights_versions: Sequence[int] | None = None) -> dict[str, float]:
        """One ORZ PPO step on ``samples``; the version bumps and the priors get the new weights (every N steps)."""
        orz_samples = segments_to_orz_samples(samples, self.prompt_builder, self.cfg.reward_source,
                                              weights_versions, append_eos=self.append_eos)
        status = self._loop.run_until_complete(self._ppo_step([s.to_orz_item() for s in orz_samples]))
        self.version += 1
        if self.version % self.cfg.weights_sync_every == 0:
            self._sync_priors()
        metrics = {f"llm/orz_{k}": float(v) for k, v in status.items() if isinstance(v, (int, float))}
        metrics.update({"llm/samples": float(len(samples)), "llm/version": float(self.version),
                        "llm/reward_mean": float(np.mean([s.reward for s in orz_samples])),
                        "llm/backend_orz": 1.0, "llm/backend_fallback": 0.0})
        return metrics

    async def _ppo_step(self, items: list[tuple[str, dict]]) -> dict[str, Any]:
        """One body of ``RayPPOTrainer.train()``'s loop: experience → (normalise) → split → policy PPO step."""
        trainer, cfg = self.trainer, self.trainer.cfg
        await trainer.make_experience(items)
        if len(trainer.replay_buffer) == 0:
            raise RuntimeError(f"ORZ made no experience from {len(items)} samples (all filtered or over "
                               f"packing_max_len={cfg.packing_max_len})")
        if cfg.advantage_normalize:
            from orz.ppo.utils import normalize_advantages

            trainer.replay_buffer = normalize_advantages(trainer.replay_buffer)
        buffers = trainer.replay_buffer.split_to_n_batches(cfg.actor_num_nodes * cfg.actor_num_gpus_per_node)
        if cfg.colocate_all:
            await trainer.policy_model.backload_to_gpu()
        status = await trainer.ppo_local_train_policy(buffers, trainer.global_step)
        if cfg.colocate_all:
            await trainer.policy_model.offload_to_cpu()
        trainer.replay_buffer.clear()
        trainer.global_step += 1
        return status or {}

    # ------------------------------------------------------------------ weights
    def attach_prior(self, prior: WeightsFollower) -> None:
        """Keep ``prior`` in sync; before the first update it already holds the same pretrained weights."""
        self._priors.append(prior)
        if self._weights is not None:
            prior.sync_from(self)

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The latest weights exported from ORZ (HF names), what ``LLMPrior.sync_from`` loads."""
        if self._weights is None:
            raise RuntimeError("no weights exported from ORZ yet: train() has not synced any update")
        return self._weights

    def _sync_priors(self) -> None:
        export_dir = self._loop.run_until_complete(self._export_weights())
        self._weights = read_hf_weights(export_dir)
        if not self.cfg.keep_weight_exports:
            shutil.rmtree(export_dir, ignore_errors=True)
            if not any(export_dir.parent.iterdir()):  # iter<N>/ held only this export
                export_dir.parent.rmdir()
        for prior in self._priors:
            prior.sync_from(self)
        logger.debug("ORZ weights (version %d) synced to %d priors", self.version, len(self._priors))

    async def _export_weights(self) -> Path:
        trainer = self.trainer
        if trainer.cfg.colocate_all:
            await trainer.policy_model.backload_to_gpu()
        await trainer.policy_model.async_save_model(trainer.tokenizer, trainer.global_step)
        if trainer.cfg.colocate_all:
            await trainer.policy_model.offload_to_cpu()
        return Path(trainer.cfg.save_path) / f"iter{trainer.global_step}" / "policy"

    def export_hf(self, out_dir: str | os.PathLike) -> Path:
        """Write ORZ's current policy as an HF directory at ``out_dir`` (replacing it), like ``LLMTrainer.export_hf``."""
        export_dir = self._loop.run_until_complete(self._export_weights())
        out_path = Path(out_dir)
        if out_path.exists():
            shutil.rmtree(out_path)
        shutil.copytree(export_dir, out_path)
        logger.info("Exported ORZ's LLM (version %d) to %s", self.version, out_path)
        return out_path

    def state_dict(self) -> dict[str, int]:
        """Counters only: the weights live in ORZ's actors (ZeRO-3 shards) and ORZ's own saves."""
        return {"version": self.version, "global_step": self.trainer.global_step}

    def load_state_dict(self, state: Mapping) -> None:
        """Not supported (module docstring): restoring the counters alone would act with a trained version number
        while ORZ's actors train on from the pretrained weights."""
        raise NotImplementedError("resuming a run whose LLM trains through ORZ is not supported: ORZ's policy weights "
                                  "and optimiser live in its actors, which PriorZero's checkpoints do not hold. "
                                  + ORZ_RESUME_HINT)

    def close(self) -> None:
        self._loop.close()


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF model directory (``*.safetensors``, else ``pytorch_model*.bin``), on CPU."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if files:
        return {name: tensor for f in files for name, tensor in load_file(f).items()}
    files = sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"ORZ's weight export {str(directory)!r} holds no *.safetensors or pytorch_model*.bin")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(torch.load(f, map_location="cpu", weights_only=True))
    return weights


# ---------------------------------------------------------------------------------------------------- choice
def build_llm_update(cfg: Mapping, trainer_factory: Callable[[], LLMTrainer],
                     runtime_builder: RuntimeBuilder = build_orz_runtime,
                     probe: Callable[[], list[str]] = probe_orz_stack) -> LLMUpdate:
    """The LLM update path for ``policy.llm`` (``use_orz_trainer``, ``allow_builtin_trainer_fallback``, ``orz``,
    ``trainer``). ``trainer_factory`` builds the built-in trainer and is called only when that path is taken."""
    if not cfg["use_orz_trainer"]:
        return BuiltinLLMUpdate(trainer_factory())
    missing = probe()
    if not missing:
        logger.info("LLM updates run through ORZ's RayPPOTrainer (in-process, fed with PriorZero's samples)")
        return OrzTrainerHook.from_llm_config(cfg, runtime_builder)
    message = unavailable_message(missing)
    if not cfg["allow_builtin_trainer_fallback"]:
        raise OrzUnavailableError(message)
    logger.warning("%s Continuing with the built-in LLMTrainer (allow_builtin_trainer_fallback=True).", message)
    return BuiltinLLMUpdate(trainer_factory(), fallback=True)


# Keys to add under PriorZeroPolicy.config['llm'] (the lead splices them in).
ORZ_LLM_CONFIG = dict(
    # (bool) Train the LLM through Open-Reasoner-Zero's RayPPOTrainer (GPU, ORZ stack) instead of LLMTrainer.
    use_orz_trainer=False,
    # (bool) With use_orz_trainer=True and no usable ORZ stack: warn and use LLMTrainer instead of failing.
    allow_builtin_trainer_fallback=False,
    # (dict) ORZ hook settings (OrzTrainerHook.config).
    orz=OrzTrainerHook.config,
)
