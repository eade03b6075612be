"""Behaviour of BatchedMCTS and select_action on small deterministic models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lzero_ext.mcts.search import BatchedMCTS, RecurrentOutput, RootInput, SearchConfig, select_action
from bench.toy_models import ToyDynamicsModel

NUM_ACTIONS = 6


class RecordingModel(ToyDynamicsModel):
    """Remembers every action the search expanded and the arguments it was called with."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actions: list[np.ndarray] = []
        self.depths: list[list[int]] = []
        self.simulation_indices: list[int] = []

    def recurrent_inference(self, parent_latents, actions, simulation_index, search_depth, parent_nodes):
        self.actions.append(actions.copy())
        self.depths.append(list(search_depth))
        self.simulation_indices.append(simulation_index)
        return super().recurrent_inference(parent_latents, actions, simulation_index, search_depth, parent_nodes)


def test_clearly_best_action_gets_most_visits():
    bonus = np.zeros(NUM_ACTIONS)
    bonus[3] = 2.0
    model = ToyDynamicsModel(NUM_ACTIONS, seed=1, root_action_bonus=bonus, reward_scale=0.1, value_scale=0.1)
    root = model.root(4, seed=2)
    root.policy_logits = np.tile([0.5, 0.2, 0.0, 0.0, 0.2, 0.0], (4, 1))  # the prior mildly prefers action 0
    out = BatchedMCTS({"num_simulations": 50}).search(model, root, add_noise=False, rng=np.random.default_rng(0))
    assert (out.visit_counts.argmax(axis=1) == 3).all()
    assert (out.visit_counts[:, 3] > 25).all()
    no_bonus = ToyDynamicsModel(NUM_ACTIONS, seed=1, reward_scale=0.1, value_scale=0.1)
    baseline = BatchedMCTS({"num_simulations": 50}).search(no_bonus, root, add_noise=False, rng=np.random.default_rng(0))
    assert (out.visit_counts[:, 3] > baseline.visit_counts[:, 3]).all()
    np.testing.assert_array_equal(select_action(out.visit_counts, 1.0, True, np.random.default_rng(0)), [3] * 4)


def test_masked_actions_get_no_visits_even_with_the_best_prior_and_reward():
    bonus = np.zeros(NUM_ACTIONS)
    bonus[1] = 5.0
    model = ToyDynamicsModel(NUM_ACTIONS, seed=3, root_action_bonus=bonus)
    legal = np.ones((3, NUM_ACTIONS), dtype=bool)
    legal[:, 1] = False
    legal[0, 5] = False
    root = model.root(3, seed=4, legal_mask=legal)
    root.policy_logits[:, 1] = 50.0
    out = BatchedMCTS({"num_simulations": 40}).search(model, root, add_noise=True, rng=np.random.default_rng(0))
    assert (out.visit_counts[~legal] == 0).all()
    assert (out.visit_distribution[~legal] == 0).all()
    assert (out.root_prior[~legal] == 0).all()
    np.testing.assert_allclose(out.visit_distribution.sum(axis=1), 1.0, rtol=1e-6)
    assert out.visit_counts.sum() == 3 * 40
    for seed in range(5):
        chosen = select_action(out.visit_counts, 1.0, False, np.random.default_rng(seed), legal_mask=legal)
        assert legal[np.arange(3), chosen].all()


def test_inner_action_mask_root_keeps_inner_nodes_on_legal_actions():
    model = RecordingModel(NUM_ACTIONS, seed=5)
    legal = np.zeros((2, NUM_ACTIONS), dtype=bool)
    legal[:, :3] = True
    root = model.root(2, seed=6, legal_mask=legal)
    cfg = {"num_simulations": 30, "inner_action_mask": "root"}
    BatchedMCTS(cfg).search(model, root, add_noise=False, rng=np.random.default_rng(0))
    assert np.concatenate(model.actions).max() < 3
    # With LightZero's default every action is allowed below the root.
    model_all = RecordingModel(NUM_ACTIONS, seed=5)
    BatchedMCTS({"num_simulations": 30}).search(model_all, root, add_noise=False, rng=np.random.default_rng(0))
    assert np.concatenate(model_all.actions).max() >= 3


def test_model_is_called_once_per_simulation_with_consistent_depths():
    model = RecordingModel(NUM_ACTIONS, seed=7)
    root = model.root(5, seed=8)
    BatchedMCTS({"num_simulations": 20}).search(model, root, add_noise=False, rng=np.random.default_rng(0))
    assert model.simulation_indices == list(range(20))
    assert all(len(d) == 5 for d in model.depths)
    assert model.depths[0] == [1] * 5
    assert all(1 <= d <= sim + 1 for sim, depths in enumerate(model.depths) for d in depths)


def test_noise_changes_visits_only_in_collect_mode():
    model = ToyDynamicsModel(NUM_ACTIONS, seed=9)
    root = model.root(8, seed=10)
    search = BatchedMCTS({"num_simulations": 30, "tie_break": "first"})
    quiet = [search.search(model, root, add_noise=False, rng=np.random.default_rng(s)) for s in (0, 1)]
    np.testing.assert_array_equal(quiet[0].visit_counts, quiet[1].visit_counts)
    np.testing.assert_allclose(quiet[0].root_prior, np.exp(root.policy_logits) / np.exp(root.policy_logits).sum(1, keepdims=True), rtol=1e-5)
    noisy = [search.search(model, root, add_noise=True, rng=np.random.default_rng(s)) for s in (0, 1)]
    assert not np.array_equal(noisy[0].visit_counts, quiet[0].visit_counts)
    assert not np.array_equal(noisy[0].visit_counts, noisy[1].visit_counts)
    np.testing.assert_allclose(noisy[0].root_prior.sum(axis=1), 1.0, rtol=1e-5)


def test_same_seed_gives_the_same_result():
    model = ToyDynamicsModel(NUM_ACTIONS, seed=11)
    root = model.root(6, seed=12)
    search = BatchedMCTS({"num_simulations": 25})  # random tie-breaking and noise both draw from rng
    first = search.search(model, root, add_noise=True, rng=np.random.default_rng(42))
    second = search.search(model, root, add_noise=True, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(first.visit_counts, second.visit_counts)
    np.testing.assert_array_equal(first.root_value, second.root_value)


def test_random_tie_breaking_spreads_first_visits_of_a_uniform_model():
    """With all-zero model outputs every choice is a tie; 'first' always takes action 0, 'random' does not."""

    class ZeroModel:
        uses_parent_latents = True

        def recurrent_inference(self, parent_latents, actions, simulation_index, search_depth, parent_nodes):
            batch = len(actions)
            return RecurrentOutput(np.zeros((batch, 2)), np.zeros(batch), np.zeros(batch), np.zeros((batch, NUM_ACTIONS)))

    root = RootInput(np.zeros((16, 2)), np.zeros((16, NUM_ACTIONS)), np.zeros(16), np.ones((16, NUM_ACTIONS), dtype=bool))
    first = BatchedMCTS({"num_simulations": 1, "tie_break": "first"}).search(ZeroModel(), root, add_noise=False, rng=np.random.default_rng(0))
    assert (first.visit_counts[:, 0] == 1).all()
    rand = BatchedMCTS({"num_simulations": 1}).search(ZeroModel(), root, add_noise=False, rng=np.random.default_rng(0))
    assert len(set(rand.visit_counts.argmax(axis=1).tolist())) > 1


def test_torch_latents_are_stored_and_gathered():
    model = ToyDynamicsModel(NUM_ACTIONS, seed=13)

    class TorchModel:
        uses_parent_latents = True

        def recurrent_inference(self, parent_latents, actions, simulation_index, search_depth, parent_nodes):
            assert isinstance(parent_latents, torch.Tensor)
            out = model.recurrent_inference(parent_latents.numpy(), actions, simulation_index, search_depth, parent_nodes)
            out.latent = torch.from_numpy(out.latent)
            return out

    root = model.root(3, seed=14)
    expected = BatchedMCTS({"num_simulations": 15, "tie_break": "first"}).search(model, root, add_noise=False, rng=np.random.default_rng(0))
    root.latent = torch.from_numpy(root.latent)
    got = BatchedMCTS({"num_simulations": 15, "tie_break": "first"}).search(TorchModel(), root, add_noise=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(got.visit_counts, expected.visit_counts)


def test_select_action_temperature_sampling_follows_visit_counts():
    counts = np.array([[0, 10, 30, 0], [5, 0, 0, 5]])
    rng = np.random.default_rng(0)
    draws = np.stack([select_action(counts, 1.0, False, rng) for _ in range(4000)])
    freq = (draws[:, 0] == 2).mean()
    assert abs(freq - 0.75) < 0.03
    assert set(draws[:, 0].tolist()) == {1, 2} and set(draws[:, 1].tolist()) == {0, 3}
    sharp = np.stack([select_action(counts, 0.25, False, rng) for _ in range(2000)])
    assert (sharp[:, 0] == 2).mean() > 0.95  # 30^4 / (10^4 + 30^4) ~ 0.988
    np.testing.assert_array_equal(select_action(counts, 1.0, True, rng), [2, 0])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(KeyError, match="num_simulations"):
        SearchConfig.from_dict({"num_simulation": 10})
    with pytest.raises(ValueError, match="tie_break"):
        SearchConfig(tie_break="last")
    model = ToyDynamicsModel(NUM_ACTIONS)
    root = model.root(2, legal_mask=np.array([[True] * NUM_ACTIONS, [False] * NUM_ACTIONS]))
    with pytest.raises(ValueError, match="no legal action"):
        BatchedMCTS().search(model, root, add_noise=False, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no visited legal action"):
        select_action(np.zeros((1, 3)), 1.0, True, np.random.default_rng(0))


def test_mixed_root_logits_with_zero_probability_legal_actions_are_searched_safely():
    """'llm' mode can give a legal action -inf; it gets no prior (but noise can still make it explorable)."""
    from lzero_ext.mcts.root_prior import mix_root_logits

    model = ToyDynamicsModel(NUM_ACTIONS, seed=15)
    legal = np.ones((2, NUM_ACTIONS), dtype=bool)
    legal[:, 5] = False
    with np.errstate(divide="ignore"):
        llm = np.log(np.array([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2, 0.0]]))
    root = model.root(2, seed=16, legal_mask=legal)
    root.policy_logits = mix_root_logits(root.policy_logits, llm, legal, "llm")
    out = BatchedMCTS({"num_simulations": 20}).search(model, root, add_noise=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.root_prior[0, 2:], 0.0)
    assert (out.visit_counts[:, 5] == 0).all() and out.visit_counts.sum() == 40
    noisy = BatchedMCTS({"num_simulations": 20}).search(model, root, add_noise=True, rng=np.random.default_rng(0))
    assert (noisy.root_prior[0, 2:5] > 0).all() and noisy.root_prior[0, 5] == 0
