"""Prior pretraining on walkthrough states: the listwise loss falls, adapter and record are written, eval games refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lzero_ext.llm.types import Turn
from zoo.jericho.priorzero.game_splits import EVAL_GAMES, TRAIN_GAMES, EvalGameError, check_train_games
from zoo.jericho.priorzero.pretrain_prior import pretrain, to_sample
from zoo.jericho.priorzero.walkthrough_states import WalkthroughState


def _state(game: str, step: int, candidates: tuple[str, ...], gold: tuple[int, ...]) -> WalkthroughState:
    return WalkthroughState(game=game, step=step, history=(Turn("A dusty hall.", "look", 0.0),),
                            observation=f"You are in room {step}. A key lies here.", candidates=candidates, gold=gold)


def test_split_is_disjoint_and_covers_the_suite() -> None:
    assert not set(EVAL_GAMES) & set(TRAIN_GAMES)
    assert len(EVAL_GAMES) >= 12 and {"detective", "zork1"} <= set(EVAL_GAMES)
    assert len(TRAIN_GAMES) + len(EVAL_GAMES) == 52 and "lighthouse" not in TRAIN_GAMES + EVAL_GAMES
    assert check_train_games(["../x/zork2.z5", "curses"]) == ["zork2", "curses"]
    with pytest.raises(EvalGameError, match="zork1"):
        check_train_games(["curses", "/games/zork1.z5"])


def test_sample_target_is_uniform_over_gold() -> None:
    sample = to_sample(_state("curses", 0, ("north", "take key", "get key", "wait"), (1, 2)))
    assert np.allclose(sample.visit_distribution, [0, 0.5, 0.5, 0]) and sample.action_index == 1


def test_pretraining_refuses_eval_games(tmp_path) -> None:
    with pytest.raises(EvalGameError):
        pretrain({"games": ["curses", "detective"], "out": str(tmp_path)})
    with pytest.raises(EvalGameError):
        pretrain({"out": str(tmp_path)}, states_by_game={"zork1": [_state("zork1", 0, ("a", "b"), (0,))]})


def test_tiny_pretraining_lowers_the_loss_and_writes_adapter_and_record(tmp_path, tiny_model_dir) -> None:
    states = {
        "curses": [_state("curses", 0, ("take key", "north", "wait"), (0,))],
        "zork2": [_state("zork2", 1, ("north", "take key", "sing"), (1,))],
        "advent": [_state("advent", 2, ("wait", "sing", "take key"), (2,))],
    }
    record = pretrain(dict(llm_path=str(tiny_model_dir), device="cpu", steps=12, batch_states=2, micro_batch_size=2,
                           lr=3e-3, warmup_steps=0, heldout_games=1, max_prompt_tokens=256, out=str(tmp_path)),
                      states_by_game=states)
    assert record["loss_curve"]["last_10pct"] < record["loss_curve"]["first_10pct"] - 0.2
    assert len(record["heldout_games"]) == 1 and record["heldout_states"] == 1 and record["train_states"] == 2
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "training_record.json").read_text())
    assert saved["data_hash"] == record["data_hash"] and saved["steps"] == 12
    assert set(saved["heldout_after"]) == {"loss", "top1", "gold_mass", "states"}
