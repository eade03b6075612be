"""The LLM trainer: SFT distils visit distributions, RL follows advantages, KL holds the policy, weights flow."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from lzero_ext.llm.prior import TransformersPrior
from lzero_ext.llm.scoring import score_candidates
from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.types import LLMSample, PriorRequest, Turn

STATES = [
    ("Kitchen. A table with a sack and a bottle.", ["open window", "west", "take sack", "eat lunch"], [0.7, 0.1, 0.1, 0.1]),
    ("Dark cellar. A trap door above.", ["up", "south", "north"], [0.1, 0.2, 0.7]),
]
HISTORY = [Turn("West of the house.", "north", 0.0)]


def _trainer(model_dir, **overrides) -> LLMTrainer:
    cfg = dict(model_path=str(model_dir), device="cpu", lr=3e-3, lr_schedule="constant", max_prompt_tokens=256,
               kl_coef=0.0)
    cfg.update(overrides)
    return LLMTrainer(cfg)


def _prior(trainer: LLMTrainer) -> TransformersPrior:
    return TransformersPrior.from_trainer(trainer, dict(max_prompt_tokens=256, cache_size=0))


def _probabilities(prior: TransformersPrior) -> list[np.ndarray]:
    return [np.exp(r.logprobs) for r in prior.score([PriorRequest(HISTORY, o, c) for o, c, _ in STATES])]


def _samples(prior, actions, advantages, visits=None) -> list[LLMSample]:
    old_prior = prior.score([PriorRequest(HISTORY, o, c) for o, c, _ in STATES])
    return [
        LLMSample(HISTORY, o, c, np.asarray(visits[i] if visits else v, dtype=np.float32), actions[i], advantages[i],
                  float(old_prior[i].logprobs[actions[i]]))
        for i, (o, c, v) in enumerate(STATES)
    ]


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * (np.log(p) - np.log(q))).sum())


def test_sft_drives_candidate_distribution_to_visit_distribution(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, rl_weight=0.0)
    prior = _prior(trainer)
    samples = _samples(prior, [0, 0], [0.0, 0.0])
    targets = [np.asarray(v) for _, _, v in STATES]
    before = sum(_kl(t, q) for t, q in zip(targets, _probabilities(prior)))
    for _ in range(25):
        metrics = trainer.train_step(samples)
    after = sum(_kl(t, q) for t, q in zip(targets, _probabilities(prior)))
    assert after <= 0.1 * before
    assert {"llm/sft_loss", "llm/rl_loss", "llm/kl", "llm/clip_frac", "llm/grad_norm", "llm/lr"} <= set(metrics)


def test_rl_follows_the_sign_of_the_advantage(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, sft_weight=0.0, lr=1e-3)
    prior = _prior(trainer)
    before = _probabilities(prior)
    samples = _samples(prior, [1, 2], [1.0, -1.0])
    for _ in range(3):
        trainer.train_step(samples)
    after = _probabilities(prior)
    assert after[0][1] > before[0][1]
    assert after[1][2] < before[1][2]


def test_ppo_clip_stops_the_gradient_outside_the_trust_region(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, sft_weight=0.0, advantage_normalization="none")
    prior = _prior(trainer)
    samples = _samples(prior, [1, 2], [1.0, 1.0])
    for sample in samples:
        sample.old_prior_logprob -= 1.0  # the current policy already likes these actions e times more: clipped
    metrics = trainer.train_step(samples)
    assert metrics["llm/clip_frac"] == 1.0
    assert metrics["llm/grad_norm"] == 0.0


def test_large_kl_coefficient_keeps_policy_near_reference(tiny_model_dir):
    results = {}
    for kl_coef in (0.0, 50.0):
        trainer = _trainer(tiny_model_dir, kl_coef=kl_coef, rl_weight=0.0, lr=1e-3)
        prior = _prior(trainer)
        reference = _probabilities(prior)
        samples = _samples(prior, [0, 0], [0.0, 0.0], visits=[[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        for _ in range(10):
            metrics = trainer.train_step(samples)
        results[kl_coef] = sum(_kl(q, p) for q, p in zip(_probabilities(prior), reference))
        assert metrics["llm/kl"] >= 0.0
    assert results[50.0] < 0.2 * results[0.0]


def test_update_changes_prior_scores_and_bumps_version(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, rl_weight=0.0)
    prior = _prior(trainer)
    assert prior.model is trainer.model  # shared, no copy per step
    requests = [PriorRequest(HISTORY, o, c) for o, c, _ in STATES]
    before = prior.score(requests)
    trainer.train_step(_samples(prior, [0, 0], [0.0, 0.0]))
    after = prior.score(requests)
    assert [r.version for r in before] == [0, 0] and [r.version for r in after] == [1, 1]
    assert not np.allclose(before[0].logprobs, after[0].logprobs)


def test_gradient_accumulation_steps_every_grad_accum_calls(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, grad_accum=2)
    samples = _samples(_prior(trainer), [0, 0], [0.5, -0.5])
    assert trainer.train_step(samples)["llm/optimizer_step"] == 0.0 and trainer.version == 0
    assert trainer.train_step(samples)["llm/optimizer_step"] == 1.0 and trainer.version == 1


def test_lora_export_reloads_with_identical_scores(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, use_lora=True, lora_dropout=0.0, kl_coef=0.1, lr=1e-2)
    prior = _prior(trainer)
    before = _probabilities(prior)
    for _ in range(3):
        trainer.train_step(_samples(prior, [0, 0], [1.0, 1.0]))
    tuned = _probabilities(prior)
    assert not np.allclose(before[0], tuned[0])
    exported = AutoModelForCausalLM.from_pretrained(trainer.export_hf(tmp_path / "export")).eval()
    prompts = [trainer.prompt_builder.build(HISTORY, o, c) for o, c, _ in STATES]
    candidates = [c for _, c, _ in STATES]
    trainer.model.eval()
    with torch.no_grad():
        expected = score_candidates(trainer.model, trainer.tokenizer, prompts, candidates)
        reloaded = score_candidates(exported, trainer.tokenizer, prompts, candidates)
    assert max((a - b).abs().max().item() for a, b in zip(expected, reloaded)) <= 1e-4
    assert not any(name.startswith("base_model") for name in exported.state_dict())


def test_state_dict_round_trip_restores_weights_and_counters(tiny_model_dir):
    trainer = _trainer(tiny_model_dir)
    trainer.train_step(_samples(_prior(trainer), [0, 0], [1.0, -1.0]))
    restored = _trainer(tiny_model_dir)
    restored.load_state_dict(trainer.state_dict())
    assert (restored.step, restored.version) == (1, 1)
    for a, b in zip(_probabilities(_prior(trainer)), _probabilities(_prior(restored))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert restored.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()


def test_group_normalised_advantages(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, advantage_normalization="group")
    prior = _prior(trainer)
    samples = _samples(prior, [0, 0], [1.0, 3.0]) + _samples(prior, [0, 0], [1.0, 3.0])
    for sample, group in zip(samples, [0, 0, 1, 2]):
        sample.group_id = group
    advantages = trainer._advantages(samples)
    np.testing.assert_allclose(advantages, [-1.0, 1.0, 0.0, 0.0], atol=1e-5)
    metrics = trainer.train_step(samples)
    assert metrics["llm/advantage_singleton_frac"] == 0.5
    for sample in samples:
        sample.group_id = None
    with pytest.raises(ValueError, match="no group_id"):
        trainer.train_step(samples)


def test_batch_normalised_advantages_and_scale_metrics(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, kl_coef=0.5, rl_weight=2.0)
    assert trainer.cfg.advantage_normalization == "batch"  # the default
    samples = _samples(_prior(trainer), [0, 1], [10.0, 0.0]) + _samples(_prior(trainer), [2, 0], [4.0, 2.0])
    np.testing.assert_allclose(trainer._advantages(samples), (np.array([10.0, 0.0, 4.0, 2.0]) - 4.0) / np.sqrt(14.0),
                               atol=1e-5)
    metrics = trainer.train_step(samples)
    assert metrics["llm/advantage_raw_mean"] == pytest.approx(4.0)
    assert metrics["llm/advantage_raw_std"] == pytest.approx(np.sqrt(14.0))
    assert metrics["llm/advantage_raw_abs_max"] == pytest.approx(10.0)
    assert metrics["llm/advantage_mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["llm/advantage_abs_max"] == pytest.approx(6.0 / np.sqrt(14.0), rel=1e-5)
    assert metrics["llm/sft_term"] == pytest.approx(metrics["llm/sft_loss"])
    assert metrics["llm/rl_term"] == pytest.approx(2.0 * metrics["llm/rl_loss"])
    assert metrics["llm/rl_term_abs"] == pytest.approx(2.0 * metrics["llm/rl_loss_abs"])
    assert metrics["llm/rl_loss_abs"] >= abs(metrics["llm/rl_loss"]) and metrics["llm/rl_loss_abs"] > 0.1
    assert metrics["llm/kl_term"] == pytest.approx(0.5 * metrics["llm/kl"])
    raw = _trainer(tiny_model_dir, advantage_normalization="none")
    np.testing.assert_allclose(raw._advantages(samples), [10.0, 0.0, 4.0, 2.0])


def test_old_advantage_option_and_bad_values_fail_clearly(tiny_model_dir):
    with pytest.raises(KeyError, match="replaced by llm_trainer.advantage_normalization"):
        _trainer(tiny_model_dir, group_normalize_advantages=True)
    with pytest.raises(ValueError, match="advantage_normalization must be one of"):
        _trainer(tiny_model_dir, advantage_normalization="episode")


def test_bad_samples_are_rejected(tiny_model_dir):
    trainer = _trainer(tiny_model_dir)
    good = _samples(_prior(trainer), [0, 0], [0.0, 0.0])[0]
    with pytest.raises(ValueError, match="no samples"):
        trainer.train_step([])
    for change, message in [
        (dict(action_index=9), "action_index"),
        (dict(visit_distribution=np.zeros(4)), "visit_distribution"),
        (dict(visit_distribution=np.ones(3)), "shape"),
        (dict(candidates=[]), "empty candidate list"),
    ]:
        with pytest.raises(ValueError, match=message):
            trainer.train_step([LLMSample(**{**good.__dict__, **change})])


def test_unknown_trainer_config_key(tiny_model_dir):
    with pytest.raises(KeyError, match="kl_coef"):
        LLMTrainer(dict(model_path=str(tiny_model_dir), kl_coeff=0.1))


def test_dual_clip_bounds_the_rl_loss_of_stale_negative_advantage_samples(tiny_model_dir):
    """A stale old prior log-prob gives a huge ratio; with A < 0 the loss is capped at dual_clip * |A|."""
    sample = LLMSample(history=[], observation="A dark room.", candidates=["north", "south"],
                       visit_distribution=np.array([0.5, 0.5]), action_index=0, advantage=-1.0,
                       old_prior_logprob=-15.0)
    capped = LLMTrainer(dict(model_path=str(tiny_model_dir), device="cpu", kl_coef=0.0, sft_weight=0.0,
                             dual_clip=3.0, advantage_normalization="none")).train_step([sample])
    assert capped["llm/rl_loss"] == pytest.approx(3.0, rel=1e-4)
    uncapped = LLMTrainer(dict(model_path=str(tiny_model_dir), device="cpu", kl_coef=0.0, sft_weight=0.0,
                               dual_clip=0.0, advantage_normalization="none")).train_step([sample])
    assert uncapped["llm/rl_loss"] > 100.0


def test_pmi_trainer_distribution_equals_the_prior_and_trains(tiny_model_dir):
    trainer = _trainer(tiny_model_dir, score_rule="pmi", kl_coef=0.1, rl_weight=0.0)
    prior = TransformersPrior.from_trainer(trainer, dict(max_prompt_tokens=256, cache_size=0, score_rule="pmi"))
    samples = _samples(prior, [0, 2], [0.0, 0.0])
    prompts = [trainer.prompt_builder.build(s.history, s.observation, s.candidates) for s in samples]
    with torch.no_grad():
        logq = trainer._candidate_logprobs(trainer.model, prompts, [s.candidates for s in samples])
    for sample, q in zip(samples, logq):  # the ratio's numerator and denominator use the same calibrated score
        assert q[sample.action_index].item() == pytest.approx(sample.old_prior_logprob, abs=1e-4)
    before = _probabilities(prior)
    for _ in range(5):
        metrics = trainer.train_step(_samples(prior, [0, 2], [0.0, 0.0]))
    after = _probabilities(prior)
    assert metrics["llm/kl"] > 0.0
    targets = [np.asarray(v) for _, _, v in STATES]
    assert sum(_kl(t, a) for t, a in zip(targets, after)) < sum(_kl(t, b) for t, b in zip(targets, before))
