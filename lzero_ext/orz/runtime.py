"""ORZ's runtime for the hook: the exp config it is built from, and the fed ``RayPPOTrainer`` subclass.

``policy.llm.orz.exp`` is checked twice: by name-free checks when the config is built (:func:`check_exp_config`,
no ORZ needed) and against the installed ORZ's ``BasePPOExpConfig`` fields when :func:`build_orz_runtime` imports
it. :func:`fed_trainer_class` makes ORZ's trainer take the responses and rewards PriorZero stored instead of
sampling them. Not run here: building the runtime needs CUDA, vLLM 0.6.x, DeepSpeed and Ray.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import torch

from lzero_ext.orz.adapter import REWARD_KEY, RESPONSE_KEY
from lzero_ext.utils.config import unknown_key_error
from lzero_ext.utils.config_types import check_value_types

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


class PlaceholderPromptDataset:
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
