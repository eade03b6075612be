"""GPU out-of-memory in the LLM prior and trainer: halve the micro-batch once and retry, else fail with advice.

No GPU is needed: the scoring call is replaced by one that raises ``torch.OutOfMemoryError`` (what CUDA raises)
the first time, or every time.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import lzero_ext.llm.prior as prior_module
from lzero_ext.llm.prior import TransformersPrior
from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.types import LLMSample, PriorRequest, Turn

REQUESTS = [
    PriorRequest([Turn("West of house.", "north", 0.0)], "North of house. A path leads north.", ["north", "south"]),
    PriorRequest([], "Kitchen. A sack is on the table.", ["take sack", "west", "up"]),
    PriorRequest([], "Dark cellar. A trap door above.", ["up", "south", "north"]),
]


class OOMInjector:
    """Wraps a function; raises torch.OutOfMemoryError on the first ``fail_times`` calls, records every call."""

    def __init__(self, func, fail_times: int) -> None:
        self.func, self.fail_times, self.calls = func, fail_times, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs.get("max_states_per_forward"))
        if len(self.calls) <= self.fail_times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.func(*args, **kwargs)


def _prior(model_dir, **cfg) -> TransformersPrior:
    return TransformersPrior(dict(model_path=str(model_dir), device="cpu", max_prompt_tokens=256, cache_size=0, **cfg))


def test_prior_halves_its_micro_batch_once_and_keeps_it(tiny_model_dir, monkeypatch, caplog):
    expected = [r.logprobs for r in _prior(tiny_model_dir, micro_batch_states=8).score(REQUESTS)]
    prior = _prior(tiny_model_dir, micro_batch_states=8)
    injector = OOMInjector(prior_module.score_candidates, fail_times=1)
    monkeypatch.setattr(prior_module, "score_candidates", injector)
    with caplog.at_level(logging.WARNING, logger="lzero_ext.llm.oom"):
        results = prior.score(REQUESTS)
    # 3 states were scored at once (micro-batch 8 > 3): the retry uses 3 // 2 = 1, and later calls keep it.
    assert injector.calls == [8, 1]
    assert prior.cfg.micro_batch_states == 1
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got.logprobs, want, atol=1e-5)
    assert any("LLM prior ran out of GPU memory" in r.getMessage() and "retrying with 1" in r.getMessage()
               for r in caplog.records)
    prior.score(REQUESTS[:1])
    assert injector.calls[-1] == 1


def test_prior_that_runs_out_of_memory_again_fails_with_advice(tiny_model_dir, monkeypatch):
    prior = _prior(tiny_model_dir, micro_batch_states=8)
    injector = OOMInjector(prior_module.score_candidates, fail_times=10)
    monkeypatch.setattr(prior_module, "score_candidates", injector)
    with pytest.raises(RuntimeError, match=r"again after halving.*policy\.llm\.prior\.micro_batch_states.*LoRA"):
        prior.score(REQUESTS)
    assert injector.calls == [8, 1]  # one retry, not a loop


def test_prior_with_a_micro_batch_of_one_fails_at_once(tiny_model_dir, monkeypatch):
    prior = _prior(tiny_model_dir, micro_batch_states=1)
    monkeypatch.setattr(prior_module, "score_candidates", OOMInjector(prior_module.score_candidates, fail_times=1))
    with pytest.raises(RuntimeError, match="micro-batch of 1"):
        prior.score(REQUESTS)


def _trainer(model_dir, **cfg) -> LLMTrainer:
    return LLMTrainer(dict(model_path=str(model_dir), device="cpu", lr=1e-3, lr_schedule="constant",
                           max_prompt_tokens=256, kl_coef=0.0, grad_accum=2, **cfg))


def _samples() -> list[LLMSample]:
    samples = []
    for index, request in enumerate(REQUESTS):
        k = len(request.candidates)
        visits = np.arange(1, k + 1, dtype=np.float32)
        samples.append(LLMSample(request.history, request.observation, request.candidates, visits, index % k,
                                 1.0 if index % 2 else -0.5, float(np.log(1.0 / k))))
    return samples


def _gradients(trainer: LLMTrainer) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]


def test_trainer_retries_with_half_the_micro_batch_and_the_same_gradients(tiny_model_dir, monkeypatch, caplog):
    clean = _trainer(tiny_model_dir, micro_batch_size=1)
    clean.train_step(_samples())  # grad_accum=2: gradients accumulate, no optimiser step yet
    trainer = _trainer(tiny_model_dir, micro_batch_size=2)
    original = LLMTrainer._micro_batch_loss
    calls: list[int] = []

    def second_micro_batch_runs_out_of_memory(self, samples, advantages):
        calls.append(len(samples))
        if len(calls) == 2:  # the first micro-batch's gradients are already accumulated by now
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(self, samples, advantages)

    monkeypatch.setattr(LLMTrainer, "_micro_batch_loss", second_micro_batch_runs_out_of_memory)
    with caplog.at_level(logging.WARNING, logger="lzero_ext.llm.oom"):
        metrics = trainer.train_step(_samples())
    assert calls == [2, 1, 1, 1, 1]  # 2 (ok), 1 (OOM), then 3 // 2 = 1 per forward
    assert trainer.cfg.micro_batch_size == 1
    assert np.isfinite(metrics["llm/total_loss"])
    # The retry starts from clean gradients: the same as a run that never ran out of memory.
    for got, want in zip(_gradients(trainer), _gradients(clean), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    assert any("LLM trainer ran out of GPU memory" in r.getMessage() for r in caplog.records)


def test_trainer_that_runs_out_of_memory_again_fails_with_advice(tiny_model_dir, monkeypatch):
    trainer = _trainer(tiny_model_dir, micro_batch_size=4)

    def always_out_of_memory(self, samples, advantages):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(LLMTrainer, "_micro_batch_loss", always_out_of_memory)
    with pytest.raises(RuntimeError, match=r"LLM trainer.*from 3 to 1.*policy\.llm\.trainer\.micro_batch_size"):
        trainer.train_step(_samples())
