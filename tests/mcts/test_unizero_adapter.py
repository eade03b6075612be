"""The UniZero adapter drives a tiny lzero.model UniZeroModel through BatchedMCTS, without lzero.mcts/lzero.policy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lzero_ext.mcts import BatchedMCTS, select_action
from lzero_ext.mcts.unizero_adapter import UniZeroSearchModel, build_unizero_model, unizero_world_model_config

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_ACTIONS, OBS_DIM, BATCH, SIMS = 5, 12, 3, 10


@pytest.fixture(scope="module")
def adapter() -> UniZeroSearchModel:
    cfg = unizero_world_model_config(NUM_ACTIONS, env_num=4, num_simulations=SIMS, embed_dim=32, num_heads=2)
    return UniZeroSearchModel(build_unizero_model(OBS_DIM, cfg, seed=0))


def test_search_runs_end_to_end_over_consecutive_steps(adapter):
    rng = np.random.default_rng(0)
    legal = np.ones((BATCH, NUM_ACTIONS), dtype=bool)
    legal[0, 1] = False
    legal[2, 3:] = False
    search = BatchedMCTS({"num_simulations": SIMS})
    last_actions = None
    adapter.clear_caches()
    for step in range(3):
        obs = torch.randn(BATCH, OBS_DIM)
        roots = adapter.initial_inference(obs, last_actions, np.full(BATCH, step))
        assert roots.latent.shape == (BATCH, 1, 32) and roots.policy_logits.shape == (BATCH, NUM_ACTIONS)
        assert np.isfinite(roots.value).all()
        out = search.search(adapter, roots.to_root_input(roots.policy_logits, legal), add_noise=True, rng=rng)
        assert out.visit_counts.sum(axis=1).tolist() == [SIMS] * BATCH
        assert (out.visit_counts[~legal] == 0).all()
        assert np.isfinite(out.root_value).all()
        actions = select_action(out.visit_counts, 1.0, False, rng, legal_mask=legal)
        last_actions = actions
    assert adapter.world_model.root_hit_cnt >= 2 * BATCH  # later steps reused the stored root KV caches
    adapter.refresh_after_training()
    assert not adapter.world_model.past_kv_cache_recurrent_infer
    assert not any(adapter.world_model.past_kv_cache_init_infer_envs)


def test_adapter_rejects_more_roots_than_env_num_and_search_before_roots(adapter):
    with pytest.raises(ValueError, match="env_num"):
        adapter.initial_inference(torch.randn(5, OBS_DIM))
    fresh = UniZeroSearchModel(adapter.model)
    with pytest.raises(RuntimeError, match="initial_inference"):
        fresh.recurrent_inference(np.zeros((1, 1, 32), np.float32), np.zeros(1, np.int64), 0, [1], np.zeros(1, np.int64))


def test_too_many_simulations_for_the_world_model_kv_pool_is_an_error(adapter):
    roots = adapter.initial_inference(torch.randn(4, OBS_DIM))
    legal = np.ones((4, NUM_ACTIONS), dtype=bool)
    with pytest.raises(ValueError, match="num_simulations"):
        BatchedMCTS({"num_simulations": SIMS + 5}).search(
            adapter, roots.to_root_input(roots.policy_logits, legal), add_noise=False, rng=np.random.default_rng(0)
        )


def test_default_import_path_avoids_lzero_mcts_and_lzero_policy():
    code = (
        "import sys, lzero_ext.mcts, lzero_ext.mcts.unizero_adapter, bench.ctree_backend, lzero.model.unizero_model\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('lzero.mcts', 'lzero.policy')))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


class DepthRecorder:
    """Passes calls through to a search model, remembering the deepest leaf."""

    def __init__(self, inner) -> None:
        self.inner, self.max_depth = inner, 0
        self.uses_parent_latents = inner.uses_parent_latents

    def recurrent_inference(self, parent_latents, actions, simulation_index, search_depth, parent_nodes):
        self.max_depth = max(self.max_depth, max(search_depth))
        return self.inner.recurrent_inference(parent_latents, actions, simulation_index, search_depth, parent_nodes)


def test_node_kv_adapter_matches_the_hashing_adapter():
    """Same model, four consecutive steps, deep enough to trim the context window: identical searches."""
    from lzero_ext.mcts.unizero_adapter import UniZeroNodeKVSearchModel

    sims = 30
    cfg = unizero_world_model_config(NUM_ACTIONS, env_num=4, num_simulations=sims, embed_dim=32, num_heads=2)
    obs = torch.from_numpy(np.random.default_rng(5).normal(size=(4, BATCH, OBS_DIM)).astype(np.float32))
    legal = np.ones((BATCH, NUM_ACTIONS), dtype=bool)
    legal[0, 2] = False
    results = {}
    for cls in (UniZeroSearchModel, UniZeroNodeKVSearchModel):
        adapter = cls(build_unizero_model(OBS_DIM, cfg, seed=3))
        recorder = DepthRecorder(adapter)
        search = BatchedMCTS({"num_simulations": sims, "tie_break": "first"})
        last_actions, outputs = None, []
        for step in range(4):
            roots = adapter.initial_inference(obs[step], last_actions, np.full(BATCH, step))
            root_input = roots.to_root_input(roots.policy_logits, legal)
            outputs.append(search.search(recorder, root_input, add_noise=False, rng=np.random.default_rng(0)))
            last_actions = np.array([1, 4, 0])
        results[cls] = (outputs, recorder.max_depth)
    (hashed, hashed_depth), (node_kv, _) = results.values()
    assert hashed_depth >= 3  # root cache + 3 (action, latent) pairs exceeds context_length - 1 = 7: trimmed
    for a, b in zip(hashed, node_kv):
        np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
        np.testing.assert_allclose(a.root_value, b.root_value, rtol=1e-5, atol=1e-5)
