"""Stand-in for ``orz.ppo.trainer.RayPPOTrainer`` (test-only, written for PriorZero's tests; no ORZ code).

It mirrors only what PriorZero's hook relies on: the constructor's arguments, ``build_models``, ``make_experience``
calling the overridable ``generate_vllm`` and ``custom_reward_fn`` (with ORZ's fixed-seed shuffle of prompts and
extras), the replay buffer's ``split_to_n_batches`` / ``clear``, ``ppo_local_train_policy`` and the policy group's
``async_save_model`` writing ``<save_path>/iter<N>/policy``. Each PPO step adds 1 to a weight, so tests can see which
weights came back. Everything it is given is recorded for the assertions.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import save_file


class FakeReplayBuffer(list):
    def split_to_n_batches(self, n: int) -> list["FakeReplayBuffer"]:
        return [FakeReplayBuffer(self[i::n]) for i in range(n)]


class FakePolicyGroup:
    def __init__(self, trainer: "RayPPOTrainer") -> None:
        self.trainer = trainer
        self.calls: list[str] = []
        self.weight = torch.zeros(2, 3)

    async def backload_to_gpu(self) -> None:
        self.calls.append("backload")

    async def offload_to_cpu(self) -> None:
        self.calls.append("offload")

    async def async_ppo_train(self, global_steps: int, replay_buffers: list) -> list[dict]:
        self.calls.append(f"ppo_train:{global_steps}")
        self.weight += 1.0
        return [{"clip_ratio": 0.0, "policy_update_steps": 1, "entropy": 0.5, "policy_loss": 0.25}]

    async def async_run_method(self, name: str, *args) -> None:
        self.calls.append(f"run:{name}")

    async def async_save_model(self, tokenizer, iteration: int) -> None:
        self.calls.append(f"save:{iteration}")
        path = Path(self.trainer.cfg.save_path) / f"iter{iteration}" / "policy"
        path.mkdir(parents=True, exist_ok=True)
        save_file({"lm_head.weight": self.weight.clone()}, str(path / "model.safetensors"))


class RayPPOTrainer:
    def __init__(self, cfg, strategy, tokenizer, train_dataset, eval_dataset=None, vllm_engines=None,
                 colocate_pg=None) -> None:
        if len(train_dataset) == 0:  # ORZ builds a shuffling DataLoader here, which rejects an empty dataset
            raise ValueError("num_samples should be a positive integer value, but got num_samples=0")
        self.cfg, self.strategy, self.tokenizer = cfg, strategy, tokenizer
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.vllm_engines, self.colocate_pg = vllm_engines, colocate_pg
        self.replay_buffer = FakeReplayBuffer()
        self.policy_model = None
        self.critic_model = None
        self.experience_inputs: list[list] = []
        self.replay_buffer_seen: list[dict] = []
        self.ppo_calls: list[tuple[int, list[int], int]] = []

    async def build_models(self, PolicyRayActor, CriticRayActor, RefRayActor, RewardRayActor=None) -> None:
        self.built_with = (PolicyRayActor, CriticRayActor, RefRayActor, RewardRayActor)
        self.policy_model = FakePolicyGroup(self)
        self.critic_model = object() if self.cfg.critic_pretrain else None

    async def _backload_vllm_engines(self) -> None:
        self.policy_model.calls.append("backload_vllm")

    async def _sync_policy_weights_to_vllm(self) -> None:
        self.policy_model.calls.append("sync_vllm")

    async def train(self) -> None:
        raise AssertionError("PriorZero's hook must never call RayPPOTrainer.train() (a whole multi-episode run)")

    def _tokenize(self, texts, max_length=99999999, padding=True, device=None):
        return self.tokenizer(texts, add_special_tokens=False, max_length=max_length, truncation=True)

    async def generate_vllm(self, gen_func, prompts, extras, **kwargs):
        raise NotImplementedError("the stand-in cannot sample; a subclass must override generate_vllm")

    async def custom_reward_fn(self, prompts, outputs, extras, reward_model_fn):
        raise NotImplementedError("custom reward function is not supported yet")

    async def make_experience(self, all_inputs, **generate_kwargs) -> None:
        self.experience_inputs.append(list(all_inputs))
        n = self.cfg.n_samples_per_prompt
        prompts = [prompt for prompt, _ in all_inputs for _ in range(n)]
        extras = [extra for _, extra in all_inputs for _ in range(n)]
        order = list(range(len(prompts)))
        random.Random(42).shuffle(order)
        prompts, extras = [prompts[i] for i in order], [extras[i] for i in order]
        size = (len(prompts) + len(self.vllm_engines) - 1) // len(self.vllm_engines)
        outputs = []
        for rank in range(len(self.vllm_engines)):
            chunk = slice(rank * size, (rank + 1) * size)
            if prompts[chunk]:
                outputs.extend(await self.generate_vllm(None, prompts[chunk], extras=extras[chunk]))
        assert len(outputs) == len(prompts)
        assert self.cfg.use_compute_reward_fn
        prompts, outputs, rewards = await self.custom_reward_fn(prompts, outputs, extras, reward_model_fn=None)
        for prompt, output, reward, extra in zip(prompts, outputs, rewards, extras):
            entry = dict(prompt=prompt, response=output, score=reward, extra=extra)
            self.replay_buffer.append(entry)
            self.replay_buffer_seen.append(entry)

    async def ppo_local_train_policy(self, replay_buffers, global_steps: int):
        self.ppo_calls.append((len(replay_buffers), [len(b) for b in replay_buffers], global_steps))
        if global_steps > self.cfg.freezing_actor_steps:
            status = await self.policy_model.async_ppo_train(global_steps, replay_buffers)
            return status[0]
        return None
