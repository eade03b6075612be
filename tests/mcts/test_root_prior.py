"""Root-prior mixing math, per mode, including masked actions."""
from __future__ import annotations

import numpy as np
import pytest

from lzero_ext.mcts.root_prior import RootPriorMixer, adaptive_llm_weight, mix_root_logits, world_model_confidence

LEGAL = np.array([[True, True, True, False], [True, False, True, True]])
WM = np.array([[1.0, 0.0, -1.0, 9.0], [0.5, 9.0, 0.5, 0.5]])
LLM = np.array([[np.log(0.7), np.log(0.2), np.log(0.1), -np.inf], [np.log(0.5), -np.inf, np.log(0.25), np.log(0.25)]])


def softmax_legal(x, mask):
    e = np.where(mask, np.exp(np.where(mask, x, 0) - np.where(mask, x, -np.inf).max(1, keepdims=True)), 0)
    return e / e.sum(1, keepdims=True)


def probs(logits):
    return np.exp(logits)


@pytest.mark.parametrize("mode", ["wm", "llm", "fixed", "adaptive"])
def test_every_mode_gives_a_distribution_on_legal_actions_and_minus_inf_elsewhere(mode):
    logits = mix_root_logits(WM, LLM, LEGAL, mode)
    assert np.isneginf(logits[~LEGAL]).all()
    np.testing.assert_allclose(probs(logits).sum(axis=1), 1.0, rtol=1e-12)


def test_wm_and_llm_modes_reproduce_each_source():
    np.testing.assert_allclose(probs(mix_root_logits(WM, None, LEGAL, "wm")), softmax_legal(WM, LEGAL), atol=1e-12)
    np.testing.assert_allclose(probs(mix_root_logits(WM, LLM, LEGAL, "llm")), softmax_legal(LLM, LEGAL), atol=1e-12)
    flat = probs(mix_root_logits(WM, LLM, LEGAL, "llm", llm_temperature=2.0))
    np.testing.assert_allclose(flat, softmax_legal(LLM / 2.0, LEGAL), atol=1e-12)
    assert flat[0, 0] < 0.7  # a higher temperature flattens the LLM prior


def test_fixed_mode_is_a_probability_space_mixture():
    got = probs(mix_root_logits(WM, LLM, LEGAL, "fixed", llm_weight=0.3))
    expected = 0.7 * softmax_legal(WM, LEGAL) + 0.3 * softmax_legal(LLM, LEGAL)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # The illegal action's huge world-model logit gets no mass, on either side of the mixture.
    assert got[0, 3] == 0 and got[1, 1] == 0
    per_root = probs(mix_root_logits(WM, LLM, LEGAL, "fixed", llm_weight=np.array([0.0, 1.0])))
    np.testing.assert_allclose(per_root[0], softmax_legal(WM, LEGAL)[0], atol=1e-12)
    np.testing.assert_allclose(per_root[1], softmax_legal(LLM, LEGAL)[1], atol=1e-12)


def test_adaptive_weight_follows_world_model_confidence():
    uniform = np.zeros((1, 4))
    confident = np.array([[30.0, 0.0, 0.0, 0.0]])
    mask = np.ones((1, 4), dtype=bool)
    np.testing.assert_allclose(world_model_confidence(uniform, mask), [0.0], atol=1e-12)
    np.testing.assert_allclose(world_model_confidence(confident, mask), [1.0], atol=1e-9)
    np.testing.assert_allclose(adaptive_llm_weight(uniform, mask, 0.3, 0.7), [0.7])
    np.testing.assert_allclose(adaptive_llm_weight(confident, mask, 0.3, 0.7), [0.3], atol=1e-9)
    # Confidence only counts legal actions: a uniform policy over the legal ones is unconfident.
    masked = np.array([[0.0, 0.0, 50.0, 0.0]])
    partial = np.array([[True, True, False, True]])
    np.testing.assert_allclose(world_model_confidence(masked, partial), [0.0], atol=1e-12)
    np.testing.assert_allclose(world_model_confidence(uniform, np.array([[False, True, False, False]])), [1.0])

    weight = adaptive_llm_weight(WM, LEGAL, 0.3, 0.7)
    expected = (1 - weight)[:, None] * softmax_legal(WM, LEGAL) + weight[:, None] * softmax_legal(LLM, LEGAL)
    np.testing.assert_allclose(probs(mix_root_logits(WM, LLM, LEGAL, "adaptive")), expected, atol=1e-12)
    assert 0.3 < weight[0] < 0.7 and weight[1] == pytest.approx(0.7)  # root 1's legal wm logits are uniform


def test_mixer_reports_weights_and_rejects_bad_config():
    mixer = RootPriorMixer({"mode": "adaptive"})
    mixed = mixer.mix(WM, LLM, LEGAL)
    np.testing.assert_allclose(mixed.llm_weight, adaptive_llm_weight(WM, LEGAL, 0.3, 0.7))
    np.testing.assert_array_equal(mixer.mix(WM, LLM, LEGAL, mode="wm").llm_weight, [0.0, 0.0])
    with pytest.raises(KeyError, match="llm_weight"):
        RootPriorMixer({"llm_wieght": 0.1})
    with pytest.raises(ValueError, match="mode"):
        RootPriorMixer({"mode": "mix"})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="needs llm_logprobs"):
        mix_root_logits(WM, None, LEGAL, "fixed")
    with pytest.raises(ValueError, match="no finite value"):
        mix_root_logits(WM, np.full_like(LLM, -np.inf), LEGAL, "fixed")
    with pytest.raises(ValueError, match="llm_weight"):
        mix_root_logits(WM, LLM, LEGAL, "fixed", llm_weight=1.5)
    with pytest.raises(ValueError, match="Unknown root-prior mode"):
        mix_root_logits(WM, LLM, LEGAL, "product")
