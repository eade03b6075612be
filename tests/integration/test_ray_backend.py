"""The Ray collection backend: two collector actors on a local Ray cluster drive the same loop as the sync collector."""
import pytest
import torch

from lzero_ext.import_utils import is_available
from lzero_ext.worker.ray_collector import RAY_REQUIREMENT, acting_config, split_budget, split_envs

RAY_TWO_COLLECTORS = dict(collect=dict(backend='ray', num_collectors=2))


def test_budget_and_envs_are_split_evenly_over_actors():
    assert split_budget(8, 2) == [4, 4] and split_budget(7, 3) == [3, 2, 2] and sum(split_budget(5, 4)) == 5
    assert [list(r) for r in split_envs(5, 2)] == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="collector_env_num=1 must be >= the number of Ray collectors"):
        split_envs(1, 2)


def test_acting_config_is_cpu_with_a_per_actor_sampling_seed(tiny_config):
    cfg, _ = tiny_config(policy=dict(device='auto'))
    first, second = acting_config(cfg, 0), acting_config(cfg, 1)
    assert first.policy.device == first.policy.model.device == first.policy.llm.prior.device == 'cpu'
    assert first.policy.collect.seed == cfg.policy.collect.seed != second.policy.collect.seed
    assert cfg.policy.device == 'auto', "the learner's config must not change"


def test_ray_backend_without_ray_fails_at_start_with_the_install_command(tiny_config, monkeypatch):
    import lzero_ext.import_utils as import_utils
    from lzero_ext.entry.hybrid_loop import HybridTrainer

    real = import_utils.is_available
    monkeypatch.setattr(import_utils, "is_available", lambda module: False if module == "ray" else real(module))
    cfg, create_cfg = tiny_config(**RAY_TWO_COLLECTORS)
    with pytest.raises(ImportError, match=f"requirements/ray.txt.*{RAY_REQUIREMENT}"):
        HybridTrainer(cfg, create_cfg)


@pytest.mark.skipif(not is_available("ray"), reason="ray is not installed (pip install -r requirements/ray.txt)")
def test_two_ray_collectors_run_the_pipeline_like_the_sync_loop(tiny_config):
    from lzero_ext.entry.hybrid_loop import HybridTrainer
    from lzero_ext.utils.metrics import read_metrics
    from lzero_ext.worker.ray_collector import RayCollectionBackend

    # 16 steps = one full episode per env per iteration, so the first iteration already trains and syncs.
    cfg, create_cfg = tiny_config(train=dict(max_iter=2, save_freq=0),
                                  policy=dict(collect=dict(collector=dict(n_steps=16))), **RAY_TWO_COLLECTORS)
    trainer = HybridTrainer(cfg, create_cfg)
    try:
        backend = trainer.collector
        assert isinstance(backend, RayCollectionBackend) and backend.num_collectors == 2
        wm_before = [p.detach().clone() for p in trainer.policy._model.parameters()]
        trainer.run()
        assert trainer.iteration == 2 and backend.envstep >= 2 * cfg.policy.collect.collector.n_steps
        assert trainer.buffer.get_num_of_transitions() > 0, "segments from the actors must reach the buffer"
        assert any(not torch.equal(a, b) for a, b in zip(wm_before, trainer.policy._model.parameters()))
        # The actors hold the learner's newest weights (LLM and world model) after the last sync.
        assert trainer.policy.weights_version > 0 and trainer.policy.wm_version > 0
        assert backend.acting_versions == (trainer.policy.weights_version, trainer.policy.wm_version)
        records = read_metrics(trainer.exp_dir / "log")
        logged = {k for record in records for k in record}
        for key in ("train/wm_total_loss", "evals/reward_mean", "perf/collect_env_steps_per_s",
                    "perf/prior_states_per_s", "collect/acting_llm_version", "collect/llm_version_lag"):
            assert key in logged, key
        acting = [r["collect/acting_llm_version"] for r in records if "collect/acting_llm_version" in r]
        assert acting[0] == 0 and acting[-1] > 0, "later collections must act with trained LLM weights"
    finally:
        trainer.close()
