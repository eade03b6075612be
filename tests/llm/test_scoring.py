"""Shared-prefix scoring equals one-sequence-per-candidate scoring, with and without gradients."""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lzero_ext.llm.scoring import (
    ContentFreeCache,
    check_vocab_compatible,
    naive_score_candidates,
    score_candidate_ids,
    score_candidates,
)

PROMPTS = [
    "Cellar. It is damp and cold. A trap door is above you.",
    "Kitchen. A table, a brown sack and a glass bottle. A passage leads west and a staircase leads up. " * 4,
    "You are in a maze of twisty little passages, all alike.",
]
CANDIDATES = [
    ["up", "open trap door", "take the lantern and the elvish sword from the trophy case"],
    ["w", "take sack", "open the brown sack carefully", "drink water", "climb the dark staircase slowly", "x"],
    ["north"],
]


def _random_qwen2(vocab_size: int, attn_implementation: str) -> Qwen2ForCausalLM:
    torch.manual_seed(7)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
    )
    config._attn_implementation = attn_implementation
    return Qwen2ForCausalLM(config).eval()


def _assert_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max((g - e).abs().max().item() for g, e in zip(got, expected)) <= 1e-4


@pytest.mark.parametrize("mode", ["prefix_cache", "packed", "lean"])
@pytest.mark.parametrize("score_rule", ["sum", "mean"])
def test_shared_prefix_matches_naive_on_tiny_model(tiny_model, tiny_tokenizer, mode, score_rule):
    with torch.no_grad():
        shared = score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, score_rule, mode=mode)
        naive = naive_score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, score_rule)
    _assert_close(shared, naive)
    assert all(s.dtype == torch.float32 for s in shared)
    assert all((s < 0).all() for s in shared)


def _content_free_prompts() -> list[str]:
    return ["Current observation: N/A\nValid actions: " + ", ".join(cands) for cands in CANDIDATES]


def _hand_logprob(model, tokenizer, prompt: str, candidate: str) -> float:
    """log p(candidate + EOS | prompt) from one plain HF forward over the whole sequence."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    candidate_ids = tokenizer(candidate, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    logits = model(torch.tensor([prompt_ids + candidate_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(prompt_ids) - 1 + i, token].item() for i, token in enumerate(candidate_ids))


@pytest.mark.parametrize("mode", ["prefix_cache", "packed", "lean"])
def test_pmi_is_conditional_minus_content_free_log_prob(tiny_model, tiny_tokenizer, mode):
    content_free = _content_free_prompts()
    with torch.no_grad():
        pmi = score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi", mode=mode,
                               content_free_prompts=content_free)
        naive = naive_score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi",
                                       content_free_prompts=content_free)
        expected = [torch.tensor([_hand_logprob(tiny_model, tiny_tokenizer, p, c)
                                  - _hand_logprob(tiny_model, tiny_tokenizer, free, c) for c in cands])
                    for p, free, cands in zip(PROMPTS, content_free, CANDIDATES)]
    _assert_close(pmi, [e.float() for e in expected])
    _assert_close(naive, [e.float() for e in expected])
    # Not a constant shift of the summed score: the calibration term differs between candidates.
    summed = score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], CANDIDATES[:1], "sum")[0]
    assert (summed - pmi[0]).std() > 1e-3


def test_content_free_terms_are_scored_once_per_action_list_and_version(tiny_model, tiny_tokenizer):
    cache = ContentFreeCache()
    content_free = _content_free_prompts()
    total = sum(len(cands) for cands in CANDIDATES)
    with torch.no_grad():
        first = score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi",
                                 content_free_prompts=content_free, calibration=cache.sync(0))
        assert cache.scored == total
        # Another state with the same action list: the content-free terms come from the cache.
        again = score_candidates(tiny_model, tiny_tokenizer, ["Elsewhere. " + PROMPTS[0]], CANDIDATES[:1], "pmi",
                                 content_free_prompts=content_free[:1], calibration=cache.sync(0))
        assert cache.scored == total
        conditional = score_candidates(tiny_model, tiny_tokenizer, ["Elsewhere. " + PROMPTS[0]], CANDIDATES[:1])
        content_free_term = score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], CANDIDATES[:1])[0] - first[0]
        _assert_close([conditional[0] - content_free_term], again)
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], CANDIDATES[:1], "pmi",
                         content_free_prompts=content_free[:1], calibration=cache.sync(1))  # new weights: scored again
        assert len(cache) == len(CANDIDATES[0]) and cache.scored == total + len(CANDIDATES[0])


def test_score_rule_is_checked(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="score_rule must be one of"):
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, True)
    with pytest.raises(ValueError, match="content-free prompt"):
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi")
    with pytest.raises(ValueError, match="one content-free prompt per state"):
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi", content_free_prompts=["N/A"])


def test_pmi_gradient_flows_through_the_conditional_term_only(tiny_tokenizer):
    model = _random_qwen2(len(tiny_tokenizer), "sdpa").train()
    weight = model.model.layers[0].self_attn.q_proj.weight
    pmi = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, "pmi", content_free_prompts=_content_free_prompts())
    torch.stack([s.sum() for s in pmi]).sum().backward()
    pmi_grad = weight.grad.clone()
    weight.grad = None
    torch.stack([s.sum() for s in score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES)]).sum().backward()
    assert model.training  # the calibration pass ran in eval mode and restored the mode
    assert torch.allclose(pmi_grad, weight.grad, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["prefix_cache", "packed", "lean"])
def test_shared_prefix_matches_naive_on_random_qwen2(tiny_tokenizer, attn_implementation, mode):
    model = _random_qwen2(len(tiny_tokenizer), attn_implementation)
    with torch.no_grad():
        shared = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, mode=mode, append_eos=False)
        naive = naive_score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, append_eos=False)
    _assert_close(shared, naive)


def test_micro_batching_keeps_order_and_values(tiny_model, tiny_tokenizer):
    with torch.no_grad():
        together = score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES)
        one_by_one = score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, max_states_per_forward=1)
    _assert_close(one_by_one, together)


@pytest.mark.parametrize(("mode", "packed_prefill"), [("prefix_cache", False), ("lean", False), ("lean", True)])
def test_gradients_match_naive(tiny_tokenizer, mode, packed_prefill):
    model = _random_qwen2(len(tiny_tokenizer), "sdpa")
    weight = model.model.layers[0].self_attn.q_proj.weight
    scores = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, mode=mode, packed_prefill=packed_prefill)
    torch.stack([s.sum() for s in scores]).sum().backward()
    shared_grad = weight.grad.clone()
    weight.grad = None
    torch.stack([s.sum() for s in naive_score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES)]).sum().backward()
    assert shared_grad.abs().max() > 0
    assert torch.allclose(shared_grad, weight.grad, atol=1e-4, rtol=1e-3)


def test_eos_separates_an_action_from_its_prefix(tiny_model, tiny_tokenizer):
    """Without EOS, 'open' scores at least as high as 'open door'; with EOS it is a complete answer of its own."""
    with torch.no_grad():
        without = score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], [["open", "open door"]], append_eos=False)
        with_eos = score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], [["open", "open door"]])
    assert without[0][0] >= without[0][1]
    assert not torch.allclose(with_eos[0], without[0])


def test_empty_candidate_list_is_rejected(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty candidate list"):
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:2], [["north"], []])
    with pytest.raises(ValueError, match="empty candidate list"):
        naive_score_candidates(tiny_model, tiny_tokenizer, PROMPTS[:1], [[]])


def test_token_ids_outside_the_model_vocabulary_are_rejected(tiny_tokenizer):
    small = _random_qwen2(100, "sdpa")
    with pytest.raises(ValueError, match="mismatch"):
        check_vocab_compatible(small, tiny_tokenizer)
    with pytest.raises(ValueError, match="mismatch"):
        score_candidate_ids(small, [[1, 2, 3]], [[[5, 150]]])


def test_lean_mode_on_a_llama_model_and_rejects_sliding_windows(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1,
    )).eval()
    with torch.no_grad():
        _assert_close(score_candidates(llama, tiny_tokenizer, PROMPTS, CANDIDATES, mode="lean"),
                      naive_score_candidates(llama, tiny_tokenizer, PROMPTS, CANDIDATES))
    qwen = _random_qwen2(len(tiny_tokenizer), "sdpa")
    qwen.model.layers[1].self_attn.sliding_window = 16
    with pytest.raises(ValueError, match="sliding-window"):
        score_candidates(qwen, tiny_tokenizer, PROMPTS, CANDIDATES, mode="lean")


def test_attention_without_custom_masks_is_rejected(tiny_tokenizer):
    model = _random_qwen2(len(tiny_tokenizer), "sdpa")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation"):
        score_candidates(model, tiny_tokenizer, PROMPTS[:1], CANDIDATES[:1])


def test_fused_norm_and_mlp_forward_gives_the_same_scores(tiny_tokenizer):
    from lzero_ext.llm.fused_ops import fuse_norms_and_mlp

    model = _random_qwen2(len(tiny_tokenizer), "sdpa")
    with torch.no_grad():
        before = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES)
        assert fuse_norms_and_mlp(model) == 3 * 2 + 1 + 3  # two norms per layer, final norm, one MLP per layer
        after = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES)
    _assert_close(after, before)


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_packed_prefill_matches_naive_with_prompts_of_different_lengths(tiny_tokenizer, architecture):
    """The unpadded prefill (flash varlen on CUDA; here its block-diagonal fallback) scores as the padded one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if architecture == "llama":
        torch.manual_seed(3)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1,
        )).eval()
    else:
        model = _random_qwen2(len(tiny_tokenizer), "sdpa")
    with torch.no_grad():
        packed = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, mode="lean", packed_prefill=True)
        padded = score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES, mode="lean", packed_prefill=False)
        naive = naive_score_candidates(model, tiny_tokenizer, PROMPTS, CANDIDATES)
    _assert_close(packed, naive)
    _assert_close(packed, padded)


def test_packed_prefill_cache_holds_the_padded_prefill_keys_and_zeros_at_the_pads(tiny_tokenizer):
    import numpy as np

    from lzero_ext.llm.lean_forward import lean_prefill, lean_prefill_packed

    model = _random_qwen2(len(tiny_tokenizer), "sdpa")
    prompts = [tiny_tokenizer(text)["input_ids"] for text in PROMPTS]
    lengths = [len(p) for p in prompts]
    longest = max(lengths)
    padded = torch.tensor([p + [0] * (longest - len(p)) for p in prompts])
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    state = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(lengths))
    position = torch.cat([torch.arange(n) for n in lengths])
    with torch.no_grad():
        hidden, cache = lean_prefill(model, padded)
        end_hidden, packed_cache = lean_prefill_packed(model, torch.tensor(sum(prompts, [])), offsets, state, position,
                                                       longest)
    assert torch.allclose(end_hidden, hidden[torch.arange(len(prompts)), torch.tensor(lengths) - 1], atol=1e-5)
    for (key, value), (packed_key, packed_value) in zip(cache, packed_cache):
        assert packed_key.shape == key.shape and packed_value.shape == value.shape
        for index, length in enumerate(lengths):
            assert torch.allclose(packed_key[index, :, :length], key[index, :, :length], atol=1e-5)
            assert torch.allclose(packed_value[index, :, :length], value[index, :, :length], atol=1e-5)
            assert not packed_key[index, :, length:].any() and not packed_value[index, :, length:].any()


def test_packed_prefill_needs_the_lean_scorer(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="packed_prefill needs the lean scorer"):
        score_candidates(tiny_model, tiny_tokenizer, PROMPTS, CANDIDATES, mode="prefix_cache", packed_prefill=True)
