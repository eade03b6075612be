"""The LLM update choice (built-in / ORZ / fallback) and our side of the ORZ call contract, against a stand-in."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from easydict import EasyDict

from lzero_ext.llm.default_model import ensure_default_model
from lzero_ext.llm.prior import LLMPrior
from lzero_ext.llm.trainer import LLMTrainer
from lzero_ext.llm.update import BuiltinLLMUpdate
from lzero_ext.orz.hook import ORZ_LLM_CONFIG, OrzTrainerHook, build_llm_update, read_hf_weights
from lzero_ext.orz.probe import OrzUnavailableError, probe_orz_stack
from lzero_ext.orz.runtime import FORCED_EXP_FIELDS
from lzero_ext.utils.config import merge_strict


class StubTrainer:
    """Stands in for LLMTrainer where only the wiring is tested (no model is built)."""

    version = 3

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.priors: list = []

    def train_step(self, samples) -> dict[str, float]:
        self.steps.append(len(samples))
        return {"llm/sft_loss": 1.0}

    def attach_prior(self, prior) -> None:
        self.priors.append(prior)


class RecordingPrior(LLMPrior):
    """An LLMPrior whose weights are whatever state dict it was last given (LLMPrior.sync_from is the real one)."""

    def __init__(self) -> None:
        super().__init__({})
        self.loaded: list[dict[str, torch.Tensor]] = []

    def _score_prompts(self, prompts, candidates):
        raise NotImplementedError

    def load_weights(self, state_dict_or_model) -> None:
        self.loaded.append({k: v.clone() for k, v in dict(state_dict_or_model).items()})
        self._set_version(self.weights_version + 1)


def llm_config(**changes) -> EasyDict:
    """policy.llm as the policy would hold it once ORZ_LLM_CONFIG is spliced in."""
    user = {k: v for k, v in changes.items() if k != "orz"}
    cfg = merge_strict(dict(ORZ_LLM_CONFIG, trainer=LLMTrainer.config), user, where="policy.llm")
    cfg.orz = merge_strict(OrzTrainerHook.config, changes.get("orz"), where="policy.llm.orz", open_keys=("exp",))
    return cfg


async def fake_runtime(trainer_cls, exp_fields, tokenizer, dataset):
    """What build_orz_runtime does, minus Ray/vLLM/DeepSpeed: construct the trainer and build its models."""
    cfg = SimpleNamespace(**{"freezing_actor_steps": -1, **exp_fields})
    trainer = trainer_cls(cfg=cfg, strategy="strategy", tokenizer=tokenizer, train_dataset=dataset,
                          vllm_engines=["engine-0"], colocate_pg=None)
    await trainer.build_models("PolicyRayActor", "CriticRayActor", "RefRayActor")
    return trainer


def no_missing() -> list[str]:
    return []


# ------------------------------------------------------------------ probe and choice
def test_probe_without_orz_lists_every_missing_part(no_orz):
    missing = probe_orz_stack()
    assert "package 'orz' (Open-Reasoner-Zero) is not installed" in missing
    for package in ("ray", "deepspeed", "vllm"):
        absent = importlib.util.find_spec(package) is None
        assert any(f"package '{package}' is not installed" in item for item in missing) == absent
    assert any("CUDA is not available" in item for item in missing) == (not torch.cuda.is_available())


def test_probe_rejects_the_unrelated_pypi_orz(pypi_orz):
    missing = probe_orz_stack()
    assert not any("is not installed" in item and "'orz'" in item for item in missing)
    assert any(item.startswith("orz.ppo.trainer does not import") for item in missing)


def test_probe_accepts_an_orz_with_ray_ppo_trainer(fake_orz):
    assert not any("orz" in item for item in probe_orz_stack())


def test_default_is_the_builtin_trainer():
    trainer = StubTrainer()
    update = build_llm_update(llm_config(), lambda: trainer, probe=pytest.fail)
    assert isinstance(update, BuiltinLLMUpdate) and update.backend == "builtin" and not update.fallback
    metrics = update.train(["s1", "s2"])
    assert trainer.steps == [2] and metrics["llm/backend_fallback"] == 0.0 and metrics["llm/backend_orz"] == 0.0
    assert update.version == 3


def test_missing_orz_fails_at_start_with_one_message(no_orz):
    built = []
    with pytest.raises(OrzUnavailableError) as error:
        build_llm_update(llm_config(use_orz_trainer=True), lambda: built.append(1))
    message = str(error.value)
    assert isinstance(error.value, ImportError) and not built
    for item in probe_orz_stack():
        assert item in message
    assert "PyPI package named 'orz' is an unrelated project" in message
    assert "allow_builtin_trainer_fallback=True" in message and "use_orz_trainer=False" in message


def test_fallback_allowed_logs_a_warning_and_uses_the_builtin_trainer(no_orz, caplog):
    trainer = StubTrainer()
    cfg = llm_config(use_orz_trainer=True, allow_builtin_trainer_fallback=True)
    with caplog.at_level(logging.WARNING, logger="lzero_ext.orz.hook"):
        update = build_llm_update(cfg, lambda: trainer)
    assert isinstance(update, BuiltinLLMUpdate) and update.trainer is trainer and update.fallback
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "package 'orz' (Open-Reasoner-Zero) is not installed" in warnings[0].getMessage()
    assert "built-in LLMTrainer" in warnings[0].getMessage()
    assert update.train(["s"])["llm/backend_fallback"] == 1.0


# ------------------------------------------------------------------ the ORZ call path (stand-in)
@pytest.fixture
def orz_hook(fake_orz, tmp_path):
    def _build(**orz_changes):
        orz_cfg = dict(orz_changes, exp=dict(save_path=str(tmp_path / "orz"), **orz_changes.pop("exp", {})))
        return build_llm_update(llm_config(use_orz_trainer=True, orz=orz_cfg), pytest.fail,
                                runtime_builder=fake_runtime, probe=no_missing)
    return _build


def test_orz_trainer_gets_our_config_tokenizer_and_no_dataset(orz_hook, fake_orz):
    hook = orz_hook(exp=dict(generate_max_len=32))
    trainer = hook.trainer
    assert isinstance(hook, OrzTrainerHook) and hook.backend == "orz"
    assert isinstance(trainer, fake_orz.RayPPOTrainer) and type(trainer) is not fake_orz.RayPPOTrainer
    assert trainer.tokenizer is hook.prompt_builder.tokenizer
    assert len(trainer.train_dataset) == 1 and trainer.critic_model is None and trainer.global_step == 0
    cfg = trainer.cfg
    for name, value in FORCED_EXP_FIELDS.items():
        assert getattr(cfg, name) == value
    assert cfg.pretrain == str(ensure_default_model())
    assert cfg.prompt_max_len == hook.prompt_builder.max_prompt_tokens
    assert cfg.packing_max_len == cfg.prompt_max_len + 32
    assert cfg.advantage_normalize is True  # advantages in game points, z-scored like LLMTrainer's 'batch'


def test_train_feeds_our_responses_and_rewards_then_one_ppo_step(orz_hook, samples):
    hook = orz_hook()
    trainer = hook.trainer
    metrics = hook.train(samples)
    [items] = trainer.experience_inputs
    assert [prompt for prompt, _ in items] == [
        hook.prompt_builder.build(s.history, s.observation, s.candidates) for s in samples]
    by_prompt = {entry["prompt"]: entry for entry in trainer.replay_buffer_seen}
    for sample, (prompt, _) in zip(samples, items):
        entry = by_prompt[prompt]
        action = sample.candidates[sample.action_index]
        assert entry["response"] == action + hook.prompt_builder.tokenizer.eos_token  # trainer.append_eos=True
        expected_tokens = len(trainer._tokenize([entry["response"]], padding=False)["input_ids"][0])
        assert entry["score"].shape == (expected_tokens,)
        assert entry["score"][-1].item() == pytest.approx(sample.advantage)
        assert not entry["score"][:-1].any()
        assert entry["extra"]["valid_actions"] == sample.candidates
    assert trainer.ppo_calls == [(1, [len(samples)], 0)]
    assert trainer.policy_model.calls == ["backload", "ppo_train:0", "offload", "backload", "save:1", "offload"]
    assert len(trainer.replay_buffer) == 0 and trainer.global_step == 1
    assert metrics["llm/version"] == 1.0 and metrics["llm/backend_orz"] == 1.0
    assert metrics["llm/orz_policy_loss"] == 0.25 and metrics["llm/samples"] == len(samples)


def test_weights_come_back_to_the_prior_and_the_version_bumps(orz_hook, samples, tmp_path):
    hook = orz_hook()
    prior = RecordingPrior()
    hook.attach_prior(prior)
    assert prior.loaded == [] and prior.weights_version == 0  # same pretrained weights until the first update
    hook.train(samples)
    assert hook.version == 1 and prior.weights_version == 1
    torch.testing.assert_close(prior.loaded[-1]["lm_head.weight"], torch.ones(2, 3))
    hook.train(samples[:2])
    assert hook.version == 2 and prior.weights_version == 2 and hook.trainer.ppo_calls[-1][2] == 1
    torch.testing.assert_close(prior.loaded[-1]["lm_head.weight"], torch.full((2, 3), 2.0))
    assert not (tmp_path / "orz" / "iter1").exists()  # exports are deleted once loaded
    late = RecordingPrior()
    hook.attach_prior(late)  # a prior attached later gets the current weights and version at once
    assert late.weights_version == 2


def test_weights_sync_every_n_updates(orz_hook, samples, tmp_path):
    hook = orz_hook(weights_sync_every=2, keep_weight_exports=True)
    prior = RecordingPrior()
    hook.attach_prior(prior)
    hook.train(samples)
    assert hook.version == 1 and prior.weights_version == 0 and prior.loaded == []
    hook.train(samples)
    assert prior.weights_version == 2
    torch.testing.assert_close(prior.loaded[-1]["lm_head.weight"], torch.full((2, 3), 2.0))
    assert (tmp_path / "orz" / "iter2" / "policy" / "model.safetensors").is_file()


def test_export_hf_copies_orz_policy_weights(orz_hook, samples, tmp_path):
    hook = orz_hook()
    hook.train(samples)
    out = hook.export_hf(tmp_path / "llm_hf")
    torch.testing.assert_close(read_hf_weights(out)["lm_head.weight"], torch.ones(2, 3))
    assert hook.state_dict() == {"version": 1, "global_step": 1}


def test_advantage_rewards_are_normalised_by_orz_unless_switched_off(orz_hook, samples):
    utils = importlib.import_module("orz.ppo.utils")
    utils.CALLS.clear()
    hook = orz_hook()
    hook.train(samples)
    scores = sorted(entry["score"][-1].item() for entry in hook.trainer.replay_buffer_seen)
    assert scores == pytest.approx(sorted(s.advantage for s in samples))
    assert utils.CALLS == [("normalize_advantages", 4)]
    utils.CALLS.clear()
    orz_hook(exp=dict(advantage_normalize=False)).train(samples)
    assert utils.CALLS == []


def test_resume_with_orz_fails_with_what_to_do_instead(orz_hook, samples):
    hook = orz_hook()
    hook.train(samples)
    with pytest.raises(NotImplementedError, match="export_llm"):
        hook.load_state_dict(hook.state_dict())
    builtin = BuiltinLLMUpdate(trainer=None)
    with pytest.raises(ValueError, match="comes from the ORZ trainer"):
        builtin.load_state_dict(hook.state_dict())


@pytest.mark.parametrize("orz_changes, error, match", [
    (dict(exp=dict(n_samples_per_prompt=8)), ValueError, "exp.n_samples_per_prompt=8 conflicts"),
    (dict(exp=dict(critic_pretrain="/models/critic")), ValueError, "exp.critic_pretrain"),
    (dict(reward_source="visits"), ValueError, "reward_source must be one of"),
    (dict(reward_source="return"), ValueError, "reward_source='return' was removed"),
    (dict(weights_sync_every=0), ValueError, "weights_sync_every must be >= 1"),
])
def test_bad_orz_settings_fail_at_start(orz_hook, orz_changes, error, match):
    with pytest.raises(error, match=match):
        orz_hook(**orz_changes)


def test_unknown_orz_key_names_the_nearest_valid_one(fake_orz):
    with pytest.raises(KeyError, match="did you mean 'policy.llm.orz.reward_source'"):
        OrzTrainerHook({"reward_sourse": "advantage"}, prompt_builder=None, model_path=Path("."), append_eos=False)


def test_read_hf_weights_reads_bin_files_and_rejects_an_empty_export(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "pytorch_model.bin")
    torch.testing.assert_close(read_hf_weights(tmp_path)["w"], torch.arange(3.0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        read_hf_weights(tmp_path / "empty")


@pytest.fixture
def fake_ray(monkeypatch):
    """A ``ray`` module recording init / placement groups (injected into sys.modules only for this test)."""
    calls: list[tuple] = []

    class PlacementGroup:
        def __init__(self, bundles, strategy):
            calls.append(("placement_group", bundles, strategy))

        def ready(self):
            return "pg-ready"

    ray = ModuleType("ray")
    ray.is_initialized = lambda: any(call[0] == "init" for call in calls)
    ray.init = lambda **kwargs: calls.append(("init", kwargs))
    ray.get = lambda ref: calls.append(("get", ref))
    ray.util = ModuleType("ray.util")
    ray.util.placement_group = ModuleType("ray.util.placement_group")
    ray.util.placement_group.placement_group = PlacementGroup
    for module in (ray, ray.util, ray.util.placement_group):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return calls


def test_default_runtime_builds_orz_from_our_config(fake_orz, fake_ray, tmp_path, samples):
    """build_orz_runtime against stand-ins: the config, constructor arguments and prologue calls it makes."""
    utils = importlib.import_module("orz.ppo.utils")
    actors = importlib.import_module("orz.ppo.actors")
    utils.CALLS.clear()
    cfg = llm_config(use_orz_trainer=True, orz=dict(exp=dict(save_path=str(tmp_path / "orz"))))
    hook = build_llm_update(cfg, pytest.fail, probe=no_missing)
    trainer = hook.trainer
    orz_cfg = trainer.cfg
    assert type(orz_cfg).__name__ == "BasePPOExpConfig"
    assert all(getattr(orz_cfg, name) == value for name, value in FORCED_EXP_FIELDS.items())
    assert orz_cfg.packing_max_len == orz_cfg.prompt_max_len + orz_cfg.generate_max_len and orz_cfg.stop == []
    assert [call[0] for call in utils.CALLS] == ["validate_args", "create_vllm_engines", "get_strategy"]
    engine_args = utils.CALLS[1][1]
    assert engine_args[0] == 1 and engine_args[2] == str(ensure_default_model()) and engine_args[-1] is trainer.colocate_pg
    assert [call[0] for call in fake_ray] == ["init", "placement_group", "get"]
    assert fake_ray[1][1:] == ([{"GPU": 1, "CPU": 1}], "PACK")
    assert trainer.vllm_engines == ["vllm-engine-0"] and trainer.strategy == "deepspeed-strategy"
    assert trainer.built_with == (actors.PolicyRayActor, actors.CriticRayActor, actors.RefRayActor, None)
    assert trainer.policy_model.calls == [
        "backload", "backload_vllm", "run:_init_vllm_engines_actor_group", "sync_vllm", "offload"]
    assert hook.train(samples)["llm/version"] == 1.0
