"""policy.llm.orz.exp: names checked against the installed ORZ's BasePPOExpConfig when the ORZ runtime is built."""
from __future__ import annotations

import pytest

from lzero_ext.orz.runtime import PLAYGROUND_EXP_FIELDS, check_exp_names


def test_exp_names_are_orz_fields_or_known_playground_fields(fake_orz):
    from orz.exps.examples.ppo.ppo_base_exp import BasePPOExpConfig

    fields = list(BasePPOExpConfig.__dataclass_fields__)
    check_exp_names({"micro_train_batch_size": 2, **dict.fromkeys(PLAYGROUND_EXP_FIELDS)}, fields)
    with pytest.raises(KeyError, match=r"policy\.llm\.orz\.exp\.micro_train_batch_sise'; did you mean "
                                       r"'policy\.llm\.orz\.exp\.micro_train_batch_size'"):
        check_exp_names({"micro_train_batch_sise": 2}, fields)


def test_default_runtime_refuses_an_unknown_exp_name(fake_orz, monkeypatch, tmp_path):
    import asyncio
    import sys
    from types import ModuleType

    from orz.ppo.trainer import RayPPOTrainer

    from lzero_ext.orz.runtime import build_orz_runtime

    for name in ("ray", "ray.util", "ray.util.placement_group"):  # imported first; the check runs before any call
        module = ModuleType(name)
        module.placement_group = None
        monkeypatch.setitem(sys.modules, name, module)
    exp = {"save_path": str(tmp_path), "generate_max_len_": 32}
    with pytest.raises(KeyError, match=r"exp\.generate_max_len_'; did you mean 'policy\.llm\.orz\.exp\.generate_max_len'"):
        asyncio.run(build_orz_runtime(RayPPOTrainer, exp, tokenizer=None, dataset=None))
