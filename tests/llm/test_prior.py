"""The transformers prior: normalisation with temperature, caching, versions, backend choice and bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lzero_ext.import_utils import is_available
from lzero_ext.llm.default_model import ensure_default_model
from lzero_ext.llm.prior import TransformersPrior, build_prior
from lzero_ext.llm.types import PriorRequest, Turn

REQUESTS = [
    PriorRequest([Turn("West of house.", "north", 0.0)], "North of house. A path leads north.", ["north", "south", "go east"]),
    PriorRequest([], "Kitchen. A sack is on the table.", ["take sack", "west", "up", "open sack", "eat"]),
]


@pytest.fixture
def prior(tiny_model_dir):
    return TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256))


def test_results_are_normalised_float32_with_version(prior):
    results = prior.score(REQUESTS)
    assert [r.logprobs.shape for r in results] == [(3,), (5,)]
    for result in results:
        assert result.logprobs.dtype == np.float32
        assert np.exp(result.logprobs).sum() == pytest.approx(1.0, abs=1e-5)
        assert result.version == 0


def test_temperature_applies_before_normalisation(tiny_model_dir, prior):
    hot = TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256, temperature=2.0))
    cold, warm = prior.score(REQUESTS[:1])[0].logprobs, hot.score(REQUESTS[:1])[0].logprobs
    expected = torch.log_softmax(torch.tensor(cold, dtype=torch.float64) / 2.0, dim=0).numpy()
    np.testing.assert_allclose(warm, expected, atol=1e-5)
    assert not np.allclose(warm, cold)


def test_identical_requests_hit_the_cache(prior, monkeypatch):
    calls = []
    original = prior._score_prompts
    monkeypatch.setattr(prior, "_score_prompts", lambda p, c: calls.append(len(p)) or original(p, c))
    first = prior.score(REQUESTS + REQUESTS[:1])
    second = prior.score(REQUESTS)
    assert calls == [2]
    np.testing.assert_array_equal(first[0].logprobs, first[2].logprobs)
    np.testing.assert_array_equal(first[1].logprobs, second[1].logprobs)


def test_call_stats_count_states_cache_hits_prompt_tokens_and_model_time(prior):
    prior.score(REQUESTS)
    prior.score(REQUESTS + REQUESTS[:1])  # three states, all three served from the cache
    prompt_tokens = sum(map(len, prior.prompt_builder.token_ids(
        prior.prompt_builder.build_batch([(r.history, r.observation, r.candidates) for r in REQUESTS]))))
    stats = prior.stats
    assert (stats.calls, stats.states, stats.scored_states, stats.prompt_tokens) == (2, 5, 2, prompt_tokens)
    assert 0 < stats.model_seconds < stats.seconds
    metrics = prior.stats.pop_metrics()
    assert metrics["perf/prior_states_per_call"] == 2.5
    assert metrics["perf/prior_cache_hit_fraction"] == pytest.approx(3 / 5)
    assert metrics["perf/prior_prompt_tokens_per_state"] == pytest.approx(prompt_tokens / 2)
    assert 0 < metrics["perf/prior_model_fraction"] < 1 and metrics["perf/prior_ms_per_call"] > 0
    assert prior.stats.calls == 0 and prior.stats.pop_metrics() == {}  # popped: the next iteration starts at zero


def test_packed_prefill_setting_reaches_the_scorer_and_keeps_the_scores(tiny_model_dir, prior, monkeypatch):
    import lzero_ext.llm.scoring as scoring

    calls = []
    original = scoring.lean_prefill_packed
    monkeypatch.setattr(scoring, "lean_prefill_packed", lambda *a, **k: calls.append(1) or original(*a, **k))
    packed = TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256,
                                    packed_prefill=True))
    assert packed.scoring_mode == "lean"
    for got, expected in zip(packed.score(REQUESTS), prior.score(REQUESTS)):
        np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-5)
    assert calls
    with pytest.raises(ValueError, match="packed_prefill needs the lean scorer"):
        TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", scoring_mode="prefix_cache",
                               packed_prefill=True))


def test_load_weights_changes_scores_and_bumps_version(tiny_model_dir, prior):
    before = prior.score(REQUESTS)
    other = TransformersPrior(dict(model_path=str(ensure_default_model(tiny_model_dir.parent, seed=5)), device="cpu"))
    prior.load_weights(other.model)
    after = prior.score(REQUESTS)
    assert [r.version for r in after] == [1, 1]
    assert not np.allclose(before[0].logprobs, after[0].logprobs)


def test_empty_candidate_list_is_rejected(prior):
    with pytest.raises(ValueError, match="empty candidate list"):
        prior.score([PriorRequest([], "A room.", [])])


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory nor a model preset.*smollm2-135m"):
        TransformersPrior(dict(model_path=str(tmp_path / "no-such-model"), device="cpu"))


def test_tokenizer_model_vocabulary_mismatch_is_a_clear_error(tiny_model_dir, tiny_tokenizer, tmp_path):
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Tokenizer/model mismatch"):
        TransformersPrior(dict(model_path=str(tmp_path), device="cpu"))


def test_unknown_config_key_names_the_nearest_valid_one(tiny_model_dir):
    with pytest.raises(KeyError, match="temperature"):
        build_prior(dict(model_path=str(tiny_model_dir), temprature=2.0))


@pytest.mark.skipif(is_available("vllm"), reason="vllm is installed here")
def test_vllm_backend_without_vllm(tiny_model_dir, caplog):
    with pytest.raises(ImportError, match="vllm"):
        build_prior(dict(backend="vllm", model_path=str(tiny_model_dir)))
    with caplog.at_level(logging.WARNING):
        prior = build_prior(dict(backend="vllm", allow_backend_fallback=True, model_path=str(tiny_model_dir),
                                 device="cpu"))
    assert isinstance(prior, TransformersPrior)
    assert "falling back" in caplog.text


def test_bad_temperature_and_backend_are_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="temperature"):
        TransformersPrior(dict(model_path=str(tiny_model_dir), temperature=0.0))
    with pytest.raises(ValueError, match="backend"):
        build_prior(dict(backend="onnx"))


def test_auto_scoring_mode_uses_lean_forward_when_supported(prior, tiny_model_dir):
    assert prior.scoring_mode == "lean"
    hf_forward = TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256,
                                        scoring_mode="prefix_cache", fused_kernels=False))
    for lean, reference in zip(prior.score(REQUESTS), hf_forward.score(REQUESTS)):
        np.testing.assert_allclose(lean.logprobs, reference.logprobs, atol=1e-4)


def _hand_logprob(model, tokenizer, prompt: str, candidate: str) -> float:
    """log p(candidate + EOS | prompt) from one plain HF forward over the whole sequence."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    candidate_ids = tokenizer(candidate, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + candidate_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(candidate_ids))


def test_pmi_prior_matches_a_hand_computation(tiny_model_dir, tiny_model, tiny_tokenizer):
    prior = TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256,
                                   score_rule="pmi"))
    builder = prior.prompt_builder
    results = prior.score(REQUESTS)
    for request, result in zip(REQUESTS, results):
        prompt = builder.build(request.history, request.observation, request.candidates)
        content_free = builder.content_free_prompt(request.candidates)
        assert "N/A" in content_free and f"- {request.candidates[-1]}" in content_free
        assert request.observation not in content_free and "West of house" not in content_free
        pmi = torch.tensor([_hand_logprob(tiny_model, tiny_tokenizer, prompt, c)
                            - _hand_logprob(tiny_model, tiny_tokenizer, content_free, c) for c in request.candidates])
        np.testing.assert_allclose(result.logprobs, torch.log_softmax(pmi, dim=0).numpy(), atol=1e-4)
    assert prior.content_free.scored == len({c for r in REQUESTS for c in r.candidates})


def test_content_free_terms_are_dropped_with_new_weights(tiny_model_dir):
    prior = TransformersPrior(dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256,
                                   score_rule="pmi", cache_size=0))
    prior.score(REQUESTS)
    scored = prior.content_free.scored
    prior.score(REQUESTS)
    assert prior.content_free.scored == scored  # same weights: cached
    prior.load_weights(prior.model)
    prior.score(REQUESTS)
    assert prior.content_free.scored == 2 * scored


def test_old_length_normalize_key_and_bad_score_rule_are_refused(tiny_model_dir):
    with pytest.raises(KeyError):
        build_prior(dict(model_path=str(tiny_model_dir), length_normalize=True))
    with pytest.raises(ValueError, match="score_rule"):
        build_prior(dict(model_path=str(tiny_model_dir), score_rule="max"))


class _FakeVLLM:
    """Stands in for ``vllm.LLM.generate`` with prompt log-probs from a transformers model (vLLM's output shape)."""

    def __init__(self, model):
        self.model = model

    def generate(self, inputs, sampling_params, use_tqdm=False):
        from types import SimpleNamespace

        outputs = []
        for item in inputs:
            ids = item["prompt_token_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].double(), dim=-1)
            entries = [None] + [{ids[i]: SimpleNamespace(logprob=logprobs[i - 1, ids[i]].item())}
                                for i in range(1, len(ids))]
            outputs.append(SimpleNamespace(prompt_logprobs=entries))
        return outputs


@pytest.mark.parametrize("score_rule", ["sum", "mean", "pmi"])
def test_vllm_scoring_path_matches_the_transformers_prior(tiny_model_dir, tiny_model, score_rule):
    from lzero_ext.llm.prior import LLMPrior, VLLMPrior

    cfg = dict(model_path=str(tiny_model_dir), device="cpu", max_prompt_tokens=256, score_rule=score_rule)
    reference = TransformersPrior(cfg)
    vllm_prior = VLLMPrior.__new__(VLLMPrior)  # skip vLLM's engine start; the scoring code path is the real one
    LLMPrior.__init__(vllm_prior, dict(cfg, backend="vllm"))
    vllm_prior._llm, vllm_prior._sampling_params = _FakeVLLM(tiny_model), None
    vllm_prior.tokenizer, vllm_prior.prompt_builder = reference.tokenizer, reference.prompt_builder
    for got, expected in zip(vllm_prior.score(REQUESTS), reference.score(REQUESTS)):
        np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-4)
