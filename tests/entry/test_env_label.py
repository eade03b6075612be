"""The trainer's start-up line names the env without assuming env-specific config keys (the library knows no game)."""
from __future__ import annotations

from pathlib import Path

from ding.envs import BaseEnv
from ding.utils import ENV_REGISTRY
from easydict import EasyDict

from lzero_ext.entry.hybrid_loop import HybridTrainer, env_label


@ENV_REGISTRY.register("test_label_plain_env")
class _PlainEnv(BaseEnv):  # registered only; never instantiated
    """An env with neither a game_path key nor a describe hook."""


@ENV_REGISTRY.register("test_label_described_env")
class _DescribedEnv(BaseEnv):
    @classmethod
    def describe(cls, cfg: dict) -> str:
        return f"level={cfg.get('level')}"


def _create(env_type: str) -> EasyDict:
    return EasyDict(env=dict(type=env_type, import_names=[]))


def test_label_falls_back_to_env_id_then_env_type_without_game_path():
    assert env_label(EasyDict(env=dict(env_id="Maze-v0")), _create("test_label_plain_env")) == "Maze-v0"
    assert env_label(EasyDict(env=dict()), _create("test_label_plain_env")) == "test_label_plain_env"
    assert env_label(EasyDict(), _create("not_registered_anywhere")) == "not_registered_anywhere"


def test_label_uses_the_env_describe_hook_first():
    cfg = EasyDict(env=dict(level=3, env_id="ignored"))
    assert env_label(cfg, _create("test_label_described_env")) == "level=3"


def test_summary_of_a_config_without_game_path():
    trainer = HybridTrainer.__new__(HybridTrainer)  # summary needs only the configs and the exp dir
    trainer.cfg = EasyDict(env=dict(), policy=dict(
        device="cpu", root_prior=dict(mode="wm"),
        llm=dict(enable=False, train=False, prior=dict(model_path=None, backend="transformers"))))
    trainer.create_cfg = _create("test_label_plain_env")
    trainer.exp_dir = Path("exp")
    line = trainer.summary()
    assert "env=test_label_plain_env" in line and "game_path" not in line


def test_jericho_env_describes_its_game():
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    create = EasyDict(env=dict(type="priorzero_jericho", import_names=["zoo.jericho.priorzero.envs.jericho_env"]))
    label = env_label(EasyDict(env=PriorZeroJerichoEnv.default_config()), create)
    assert label == "lighthouse.z5"
