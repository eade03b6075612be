"""End to end on our default game with tiny sizes: collect → train both learners → checkpoint → resume."""
import numpy as np
import pytest
import torch

from lzero_ext.buffer.game_segment import StepObservation
from lzero_ext.entry.hybrid_loop import HybridTrainer
from lzero_ext.llm.types import Turn


@pytest.fixture
def trainer(tiny_config):
    cfg, create_cfg = tiny_config()
    t = HybridTrainer(cfg, create_cfg)
    yield t
    t.close()


def _observations(trainer):
    env = trainer.collector._env
    env.launch()
    ready = env.ready_obs
    obs = [StepObservation.from_env_obs(ready[e]) for e in sorted(ready)]
    # A second, different state: step env 0 once.
    timestep = env.step({0: 1})[0]
    return obs + [StepObservation.from_env_obs(timestep.obs)]


def test_batched_prior_equals_per_env_priors(trainer):
    observations = _observations(trainer)
    histories = [[], [Turn("You are on a beach.", "look", 0.0)], [Turn("A hut.", "east", 1.0)]]
    policy = trainer.policy
    policy.llm_prior._cache.clear()
    batched, lists, version = policy.score_prior(observations, histories)
    for i, (obs, hist) in enumerate(zip(observations, histories)):
        policy.llm_prior._cache.clear()
        single, single_lists, single_version = policy.score_prior([obs], [hist])
        np.testing.assert_allclose(single[0], batched[i], atol=1e-5)
        assert single_version == version
    legal = np.stack([o.action_mask.astype(bool) for o in observations])
    assert np.isneginf(batched[~legal]).all()
    for row, (obs, logprobs) in enumerate(zip(observations, lists)):  # candidate k sits at its action index
        np.testing.assert_allclose(batched[row, obs.action_indices], logprobs, atol=1e-6)
    np.testing.assert_allclose(np.exp(batched).sum(axis=1), 1.0, atol=1e-5)


def test_training_iterations_update_both_learners_and_the_prior_version(trainer):
    wm_before = [p.detach().clone() for p in trainer.policy._model.parameters()]
    version_before = trainer.policy.weights_version
    trainer.run()
    assert trainer.iteration == 2 and trainer.collector.envstep >= 16
    changed = [not torch.equal(a, b) for a, b in zip(wm_before, trainer.policy._model.parameters())]
    assert any(changed), "world model weights did not change"
    assert trainer.policy.weights_version > version_before, "LLM updates must bump the prior's weights version"
    from lzero_ext.utils.metrics import read_metrics

    logged = {k for record in read_metrics(trainer.exp_dir / "log") for k in record}
    for key in ("train/wm_total_loss", "train/llm_sft_loss", "train/llm_rft_loss", "evals/reward_mean",
                "perf/collect_env_steps_per_s", "perf/prior_states_per_s", "llm/weights_version",
                "perf/prior_states_per_call", "perf/prior_prompt_tokens_per_state", "perf/prior_model_fraction"):
        assert key in logged, key


def test_resume_continues_with_identical_counters_and_weights(tiny_config):
    cfg, create_cfg = tiny_config()
    first = HybridTrainer(cfg, create_cfg)
    first.run()
    saved_iter, saved_steps, saved_version = first.iteration, first.collector.envstep, first.policy.weights_version
    wm_state = {k: v.clone() for k, v in first.policy._model.state_dict().items()}
    llm_state = {k: v.clone() for k, v in first.policy._llm_trainer.model.state_dict().items()}
    first.close()

    cfg2, create_cfg2 = tiny_config(train=dict(max_iter=3))
    second = HybridTrainer(cfg2, create_cfg2, resume="auto")
    try:
        assert (second.iteration, second.collector.envstep) == (saved_iter, saved_steps)
        assert second.policy.weights_version == saved_version
        for k, v in second.policy._model.state_dict().items():
            assert torch.equal(v, wm_state[k]), k
        for k, v in second.policy._llm_trainer.model.state_dict().items():
            assert torch.equal(v, llm_state[k]), k
        assert second.buffer.get_num_of_transitions() > 0
        second.run()
        assert second.iteration == 3 and second.collector.envstep > saved_steps
    finally:
        second.close()


def test_orz_requested_without_orz_fails_at_start_or_falls_back_when_allowed(tiny_config, caplog):
    from lzero_ext.orz.probe import OrzUnavailableError

    cfg, create_cfg = tiny_config(policy=dict(llm=dict(use_orz_trainer=True)))
    with pytest.raises(OrzUnavailableError, match="orz"):
        HybridTrainer(cfg, create_cfg)
    cfg, create_cfg = tiny_config(policy=dict(llm=dict(use_orz_trainer=True, allow_builtin_trainer_fallback=True)))
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        assert trainer.policy._llm_update.backend == "builtin" and trainer.policy._llm_update.fallback
        assert any("fall" in r.getMessage().lower() for r in caplog.records)
    finally:
        trainer.close()


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_unusable_device_is_a_clear_error(tiny_config, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    cfg, create_cfg = tiny_config(policy=dict(device=device))
    with pytest.raises(ValueError, match="device"):
        HybridTrainer(cfg, create_cfg)


def test_run_aborts_after_too_many_consecutive_non_finite_updates(tiny_config, monkeypatch):
    cfg, create_cfg = tiny_config(train=dict(max_consecutive_skipped_updates=3, wm_updates_per_iter=5))
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        monkeypatch.setattr(trainer.policy, "train_world_model", lambda buffer: {"wm/skipped_updates": 1.0})
        with pytest.raises(RuntimeError, match="3 world-model updates in a row"):
            trainer.run()
    finally:
        trainer.close()


def test_eval_ablations_are_reported_under_their_own_names(tiny_config):
    cfg, create_cfg = tiny_config(policy=dict(eval=dict(evaluator=dict(ablations=True))))
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        _, info = trainer.evaluator.eval(train_iter=0)
        for prefix in ("evals/", "evals/llm_only/", "evals/wm_only/"):
            assert f"{prefix}reward_mean" in info and f"{prefix}victory_rate" in info
    finally:
        trainer.close()


def test_eval_temperatures_sample_from_visits_and_are_reported_apart(tiny_config, monkeypatch):
    """Headline eval at policy.eval.temperature; each extra temperature under evals/t<T>/; 0 means argmax."""
    import lzero_ext.policy.priorzero_policy as policy_module

    seen = []
    real_select = policy_module.select_action

    def spy(visit_counts, temperature, deterministic, rng, legal_mask=None):
        seen.append((float(temperature), bool(deterministic)))
        return real_select(visit_counts, temperature, deterministic, rng, legal_mask)

    monkeypatch.setattr(policy_module, "select_action", spy)
    cfg, create_cfg = tiny_config(policy=dict(eval=dict(temperature=0.5, evaluator=dict(extra_temperatures=[0]))))
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        _, info = trainer.evaluator.eval(train_iter=0)
        for prefix in ("evals/", "evals/t0/"):
            assert f"{prefix}reward_mean" in info
        assert {(0.5, False), (0.0, True)} == set(seen)
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="eval.temperature"):
        HybridTrainer(*tiny_config(policy=dict(eval=dict(temperature=-1.0))))
