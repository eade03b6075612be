"""Choosing the LLM update path: the built-in :class:`~lzero_ext.llm.trainer.LLMTrainer` or ORZ's ``RayPPOTrainer``.

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
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from lzero_ext.llm.loading import load_tokenizer, resolve_model_path
from lzero_ext.llm.prompt import PromptBuilder
from lzero_ext.llm.types import LLMSample
from lzero_ext.orz.adapter import REWARD_KEY, RESPONSE_KEY, check_reward_source, segments_to_orz_samples
from lzero_ext.utils.config import merge_strict, unknown_key_error
from lzero_ext.utils.config_types import check_value_types

if TYPE_CHECKING:
    from lzero_ext.llm.prior import LLMPrior
    from lzero_ext.llm.trainer import LLMTrainer

logger = logging.getLogger(__name__)

ORZ_TRAINER_MODULE = "orz.ppo.trainer"
ORZ_TRAINER_CLASS = "RayPPOTrainer"
ORZ_VLLM_SERIES = "0.6."
ORZ_INSTALL_HINT = (
    "Install Open-Reasoner-Zero from a source checkout (`pip install -e .`; the PyPI package named 'orz' is an "
    "unrelated project) inside its GPU stack (torch 2.5.1, vllm 0.6.5, deepspeed 0.16.0 with ORZ's patches, "
    "ray 2.40.0, flash-attn; see ORZ's Dockerfile)"
)

ORZ_RESUME_HINT = (
    "Export the trained LLM (PriorZeroPolicy.export_llm) and start a new run with policy.llm.trainer.model_path and "
    "policy.llm.prior.model_path set to the export (ORZ's exp.pretrain defaults to the trainer's model_path)."
)

# ORZ settings the hook relies on: one stored response per prompt, our reward through custom_reward_fn, no reward
# model, no critic (the baseline comes from the world model) and γ=λ=1 so every response token gets the reward.
FORCED_EXP_FIELDS = dict(n_samples_per_prompt=1, use_compute_reward_fn=True, reward_pretrain=None,
                         critic_pretrain="", gamma=1.0, lambd=1.0)
# policy.llm.orz.exp stays open by NAME at config time: its fields are those of the installed ORZ checkout's
# BasePPOExpConfig (ORZ is installed from source, unpinned, and its fields change between versions) plus the playground
# fields below, and ORZ is not importable where configs are built. Checked then (check_exp_config): a dict, the forced
# fields' values, the types of the fields the hook gives a default. Checked at start (build_orz_runtime, ORZ
# imported): every name is a BasePPOExpConfig field or in PLAYGROUND_EXP_FIELDS, else KeyError naming the nearest.
# Fields outside BasePPOExpConfig that the hook sets and ORZ reads: RayPPOTrainer reads packing_max_len and
# use_orm_score; top_k and stop are ORZ playground generation settings. Add a name here to pass another one.
PLAYGROUND_EXP_FIELDS = ("packing_max_len", "use_orm_score", "top_k", "stop")
# Types of the fields the hook gives a default (each value an example of the type check_value_types expects).
HOOK_EXP_FIELD_TYPES = dict(
    pretrain="", save_path="", ckpt_path="", tensorboard_log_dir="", prompt_max_len=0, generate_max_len=0,
    packing_max_len=0, colocate_all=False, actor_num_nodes=1, actor_num_gpus_per_node=1, ref_num_nodes=1,
    ref_num_gpus_per_node=1, vllm_num_engines=1, micro_train_batch_size=1, micro_forward_batch_size=1,
    advantage_normalize=False, use_orm_score=False, top_k=-1, stop=[],
)


def check_exp_config(exp: Any, where: str = "policy.llm.orz.exp") -> None:
    """Validator of ``policy.llm.orz.exp`` when the config is built (no ORZ needed; see PLAYGROUND_EXP_FIELDS)."""
    if not isinstance(exp, Mapping):
        raise TypeError(f"Config value '{where}' must be a dict of ORZ BasePPOExpConfig fields, got {exp!r}")
    for name, value in FORCED_EXP_FIELDS.items():
        if name in exp and exp[name] != value:
            raise ValueError(f"{where}.{name}={exp[name]!r} conflicts with the ORZ hook, which needs {name}={value!r}")
    check_value_types(HOOK_EXP_FIELD_TYPES, exp, where)


def check_exp_names(exp_fields: Mapping[str, Any], orz_fields: Sequence[str]) -> None:
    """Every exp name must be a field of the installed ORZ's BasePPOExpConfig or a known playground field."""
    valid = [*orz_fields, *PLAYGROUND_EXP_FIELDS]
    for name in exp_fields:
        if name not in valid:
            raise unknown_key_error(name, valid, "policy.llm.orz.exp")

RuntimeBuilder = Callable[[type, Mapping[str, Any], Any, Any], Awaitable[Any]]


class OrzUnavailableError(ImportError):
    """``use_orz_trainer=True`` but the ORZ stack is not usable here (the message lists every missing part)."""


# ---------------------------------------------------------------------------------------------------- probing
def probe_orz_stack() -> list[str]:
    """Every part of ORZ's stack that is missing, as human-readable items (empty list: usable).

    Not cached (unlike ``import_utils.is_orz_available``), so it reflects the import path at call time.
    """
    missing = []
    if importlib.util.find_spec("orz") is None:
        missing.append("package 'orz' (Open-Reasoner-Zero) is not installed")
    else:
        missing.extend(_probe_orz_trainer())
    for package in ("ray", "deepspeed"):
        if importlib.util.find_spec(package) is None:
            missing.append(f"package '{package}' is not installed")
    missing.extend(_probe_vllm())
    if not torch.cuda.is_available():
        missing.append("CUDA is not available (ORZ's actors and vLLM engines need GPUs)")
    return missing


def _probe_orz_trainer() -> list[str]:
    try:
        module = importlib.import_module(ORZ_TRAINER_MODULE)
    except Exception as error:  # noqa: BLE001 - vLLM / flash-attn failures are not always ImportError
        return [f"{ORZ_TRAINER_MODULE} does not import ({type(error).__name__}: {error})"]
    if not hasattr(module, ORZ_TRAINER_CLASS):
        return [f"'orz' is installed but has no {ORZ_TRAINER_MODULE}.{ORZ_TRAINER_CLASS} "
                f"(the PyPI package named 'orz' is unrelated to Open-Reasoner-Zero)"]
    return []


def _probe_vllm() -> list[str]:
    if importlib.util.find_spec("vllm") is None:
        return [f"package 'vllm' is not installed (ORZ needs the {ORZ_VLLM_SERIES}x V0 engine)"]
    version = importlib.metadata.version("vllm")
    if not version.startswith(ORZ_VLLM_SERIES):
        return [f"vllm {version} is installed but ORZ patches the V0 engine of vllm {ORZ_VLLM_SERIES}x"]
    return []


def unavailable_message(missing: Sequence[str]) -> str:
    """The one start-up message for an unusable ORZ stack."""
    return (
        f"policy.llm.use_orz_trainer=True but the ORZ trainer cannot be used: {'; '.join(missing)}. "
        f"{ORZ_INSTALL_HINT}; or set policy.llm.use_orz_trainer=False, or set "
        f"policy.llm.allow_builtin_trainer_fallback=True to train with the built-in LLMTrainer instead."
    )


# ---------------------------------------------------------------------------------------------------- update paths
class LLMUpdate(Protocol):
    """What the training loop calls for an LLM update, whichever backend runs it."""

    backend: str  # 'builtin' or 'orz'
    version: int  # weights version (optimiser / PPO steps applied so far)

    def train(self, samples: Sequence[LLMSample]) -> dict[str, float]: ...

    def attach_prior(self, prior: "LLMPrior") -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...


class BuiltinLLMUpdate:
    """The built-in trainer behind the :class:`LLMUpdate` interface (``trainer`` stays reachable for checkpoints)."""

    backend = "builtin"

    def __init__(self, trainer: "LLMTrainer", fallback: bool = False) -> None:
        self.trainer = trainer
        self.fallback = fallback

    @property
    def version(self) -> int:
        return self.trainer.version

    def train(self, samples: Sequence[LLMSample]) -> dict[str, float]:
        metrics = self.trainer.train_step(samples)
        metrics["llm/backend_orz"] = 0.0
        metrics["llm/backend_fallback"] = float(self.fallback)
        return metrics

    def load_state_dict(self, state: Mapping) -> None:
        if "model" not in state:
            raise ValueError("this checkpoint's LLM state comes from the ORZ trainer (counters only, no weights); "
                             "the built-in LLMTrainer cannot resume from it. " + ORZ_RESUME_HINT)
        self.trainer.load_state_dict(state)

    def attach_prior(self, prior: "LLMPrior") -> None:
        self.trainer.attach_prior(prior)

    def state_dict(self) -> dict:
        return self.trainer.state_dict()

    def export_hf(self, out_dir: str | os.PathLike) -> Path:
        return self.trainer.export_hf(out_dir)


class _PlaceholderPromptDataset:
    """RayPPOTrainer's constructor builds a shuffling DataLoader, which rejects an empty dataset; it is never read."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[str, dict]:
        raise RuntimeError("the ORZ hook feeds samples through train(); RayPPOTrainer's own dataloader is unused")

    @staticmethod
    def collate_fn(items: list) -> list:
        return list(items)


def fed_trainer_class(base: type) -> type:
    """Subclass of ORZ's ``RayPPOTrainer`` that takes responses and rewards from the extras instead of sampling."""

    class PriorZeroFedTrainer(base):
        async def generate_vllm(self, gen_func, prompts: list[str], extras: list[dict], **kwargs) -> list[str]:
            return [extra[RESPONSE_KEY] for extra in extras]

        async def custom_reward_fn(self, prompts: list[str], outputs: list[str], extras: list[dict],
                                   reward_model_fn=None) -> tuple[list[str], list[str], list[torch.Tensor]]:
            token_ids = self._tokenize(list(outputs), self.cfg.generate_max_len, padding=False)["input_ids"]
            scores = []
            for index, (ids, extra) in enumerate(zip(token_ids, extras)):
                if len(ids) == 0:
                    raise ValueError(f"ORZ sample {index}: response {extra[RESPONSE_KEY]!r} tokenizes to nothing")
                score = torch.zeros(len(ids), dtype=torch.float32)
                score[-1] = float(extra[REWARD_KEY])
                scores.append(score)
            return list(prompts), list(outputs), scores

    PriorZeroFedTrainer.__name__ = PriorZeroFedTrainer.__qualname__ = f"PriorZeroFed{base.__name__}"
    return PriorZeroFedTrainer


async def build_orz_runtime(trainer_cls: type, exp_fields: Mapping[str, Any], tokenizer, dataset) -> Any:
    """Build ORZ's runtime once (NOT run here, no GPU/ORZ stack): config, placement group, vLLM engines, strategy,
    policy and reference actors, then the prologue of ``RayPPOTrainer.train()`` (engine group + first weight sync)."""
    import ray
    from orz.exps.examples.ppo.ppo_base_exp import BasePPOExpConfig
    from orz.ppo.actors import CriticRayActor, PolicyRayActor, RefRayActor
    from orz.ppo.utils import _validate_args, create_vllm_engines, get_strategy
    from ray.util.placement_group import placement_group

    check_exp_names(exp_fields, list(BasePPOExpConfig.__dataclass_fields__))
    known = {name: value for name, value in exp_fields.items() if name in BasePPOExpConfig.__dataclass_fields__}
    cfg = BasePPOExpConfig(**known)
    for name, value in exp_fields.items():  # playground-only fields the trainer reads (PLAYGROUND_EXP_FIELDS)
        if name not in known:
            setattr(cfg, name, value)
    _validate_args(cfg)
    if not ray.is_initialized():
        ray.init()
    pg = None
    if cfg.colocate_all:
        pg = placement_group([{"GPU": 1, "CPU": 1}] * cfg.vllm_num_engines, strategy="PACK")
        ray.get(pg.ready())
    engines = create_vllm_engines(
        cfg.vllm_num_engines, cfg.vllm_tensor_parallel_size, cfg.pretrain, cfg.seed, cfg.enable_prefix_caching,
        cfg.enforce_eager, cfg.max_len, cfg.colocate_all, cfg.enable_chunked_prefill, cfg.max_num_batched_tokens,
        cfg.gpu_memory_utilization, cfg.micro_rollout_batch_size, pg,
    )
    trainer = trainer_cls(cfg=cfg, strategy=get_strategy(cfg), tokenizer=tokenizer, train_dataset=dataset,
                          vllm_engines=engines, colocate_pg=pg)
    await trainer.build_models(PolicyRayActor, CriticRayActor, RefRayActor)
    if cfg.colocate_all:
        await trainer.policy_model.backload_to_gpu()
        await trainer._backload_vllm_engines()
    await trainer.policy_model.async_run_method("_init_vllm_engines_actor_group", engines)
    await trainer._sync_policy_weights_to_vllm()
    if cfg.colocate_all:
        await trainer.policy_model.offload_to_cpu()
    return trainer


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
        self._priors: list["LLMPrior"] = []
        trainer_module = importlib.import_module(ORZ_TRAINER_MODULE)
        trainer_cls = fed_trainer_class(getattr(trainer_module, ORZ_TRAINER_CLASS))
        self._loop = asyncio.new_event_loop()
        self.trainer = self._loop.run_until_complete(
            runtime_builder(trainer_cls, self.exp_fields, prompt_builder.tokenizer, _PlaceholderPromptDataset()))
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
    def attach_prior(self, prior: "LLMPrior") -> None:
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
def build_llm_update(cfg: Mapping, trainer_factory: Callable[[], "LLMTrainer"],
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
