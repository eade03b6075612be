"""Stand-in for ORZ's ``BasePPOExpConfig`` (test-only): the fields PriorZero's runtime builder reads or sets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class BasePPOExpConfig:
    actor_num_nodes: int = 1
    actor_num_gpus_per_node: int = 2
    ref_num_nodes: int = 1
    ref_num_gpus_per_node: int = 2
    colocate_all: bool = False
    vllm_num_engines: int = 4
    vllm_tensor_parallel_size: int = 1
    pretrain: Optional[str] = "example_path"
    critic_pretrain: Optional[str] = "example_path"
    reward_pretrain: Optional[str] = "example_path"
    ckpt_path: str = "example_path"
    save_path: str = "example_path"
    tensorboard_log_dir: str = "example_path"
    seed: int = 42
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool = False
    max_num_batched_tokens: int = 2048
    enforce_eager: bool = False
    gpu_memory_utilization: float = 0.85
    prompt_max_len: int = 1024
    generate_max_len: int = 1024
    micro_train_batch_size: int = 8
    micro_rollout_batch_size: int = 32
    micro_forward_batch_size: int = 32
    max_len: Optional[int] = None
    lambd: float = 1
    gamma: float = 1
    freezing_actor_steps: int = -1
    n_samples_per_prompt: int = 1
    use_compute_reward_fn: bool = False
    advantage_normalize: bool = True
