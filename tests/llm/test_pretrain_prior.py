"""Prior pretraining on walkthrough states: the listwise loss falls, adapter and record are written, eval games refused."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lzero_ext.llm.types import Turn
from zoo.jericho.priorzero.game_splits import EVAL_GAMES, TRAIN_GAMES, EvalGameError, check_train_games
from zoo.jericho.priorzero.pretrain_prior import _WeightAverage, pretrain, spread, to_sample
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


def test_bad_average_and_held_out_cap_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="weight_average must be a decay"):
        pretrain({"weight_average": 1.0, "out": str(tmp_path)})
    with pytest.raises(ValueError, match="heldout_states_per_game must be at least 1"):
        pretrain({"heldout_states_per_game": 0, "out": str(tmp_path)})


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
    assert [point["step"] for point in saved["heldout_curve"]] == [0, 12]


def test_the_saved_adapter_is_the_best_held_out_one_and_float16(tmp_path, tiny_model_dir) -> None:
    """The held-out state is a training state with the other candidate as gold, so whatever training gains the held-out
    game loses: the adapter saved is step 0's (a zero LoRA update), not the last one; it is written in float16."""
    from safetensors.torch import load_file

    train = {game: [_state(game, 0, ("take key", "sing"), (0,))] for game in ("curses", "zork2")}
    heldout = {"advent": [_state("advent", 0, ("take key", "sing"), (1,))]}
    cfg = dict(llm_path=str(tiny_model_dir), device="cpu", steps=8, batch_states=2, micro_batch_size=2, lr=3e-3,
               warmup_steps=0, heldout_games=1, eval_every=4, max_prompt_tokens=256, seed=0, out=str(tmp_path))
    cfg["seed"] = next(seed for seed in range(50)  # a seed that holds out 'advent'
                       if random.Random(seed).sample(sorted({**train, **heldout}), 1) == ["advent"])
    record = pretrain(cfg, states_by_game={**train, **heldout})
    assert record["heldout_games"] == ["advent"]
    assert [point["step"] for point in record["heldout_curve"]] == [0, 4, 8]
    assert record["heldout_curve"][-1]["gold_mass"] < record["heldout_curve"][0]["gold_mass"]
    assert record["saved_step"] == 0 and record["heldout_after"] == record["heldout_before"]
    tensors = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {str(v.dtype) for v in tensors.values()} == {"torch.float16"}
    assert all(float(v.abs().max()) == 0.0 for k, v in tensors.items() if "lora_B" in k)
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)  # as given, not a resolved cache path


def test_a_pretraining_output_registers_as_a_named_prior(tmp_path, tiny_model_dir, monkeypatch) -> None:
    """``priors/<name>/`` (adapter + record, as pretrain_prior writes them) becomes ``--llm-path <name>``."""
    from lzero_ext.llm.loading import load_model_and_tokenizer
    from lzero_ext.llm.presets import DirectoryPreset, register_model_preset, unregister_model_preset
    from zoo.jericho.priorzero.priors import register_priors

    monkeypatch.setenv("PRIORZERO_CACHE", str(tmp_path / "cache"))
    register_model_preset(DirectoryPreset(name="tiny-base-for-priors", description="test", path=tiny_model_dir))
    states = {game: [_state(game, 0, ("take key", "north", "wait"), (0,))] for game in ("curses", "zork2")}
    out = tmp_path / "priors" / "tiny-jericho-test"
    pretrain(dict(llm_path=str(tiny_model_dir), device="cpu", steps=2, batch_states=1, micro_batch_size=1,
                  warmup_steps=0, heldout_games=1, max_prompt_tokens=256, out=str(out)), states_by_game=states)
    record_path = out / "training_record.json"
    record = json.loads(record_path.read_text())
    record["config"]["llm_path"] = "tiny-base-for-priors"  # as a run on a named base writes it
    record_path.write_text(json.dumps(record))
    orphan = tmp_path / "priors" / "orphan"
    (orphan / "adapter").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (orphan / "adapter" / name).write_bytes((out / "adapter" / name).read_bytes())
    (orphan / "training_record.json").write_text(json.dumps({**record, "config": {"llm_path": "no-such-base"}}))
    try:
        assert register_priors(tmp_path / "priors") == ["tiny-jericho-test"]  # the orphan is skipped, not fatal
        model, _, path = load_model_and_tokenizer("tiny-jericho-test", device="cpu")
        assert path.is_dir() and path != tiny_model_dir and model.num_parameters() > 0
    finally:
        unregister_model_preset("tiny-jericho-test")
        unregister_model_preset("tiny-base-for-priors")


def test_max_seconds_stops_training_and_still_writes_the_adapter(tmp_path, tiny_model_dir) -> None:
    states = {game: [_state(game, 0, ("take key", "north", "wait"), (0,))] for game in ("curses", "zork2")}
    record = pretrain(dict(llm_path=str(tiny_model_dir), device="cpu", steps=1000, batch_states=1, micro_batch_size=1,
                           warmup_steps=0, heldout_games=1, max_prompt_tokens=256, max_seconds=0.0,
                           out=str(tmp_path)), states_by_game=states)
    assert record["steps"] == 0 and record["loss_curve"] == {}
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_the_shipped_prior_is_registered_and_never_saw_an_eval_game() -> None:
    """priors/smollm2-135m-jericho: a named preset on smollm2-135m whose record lists only training-split games."""
    from lzero_ext.llm.presets import is_preset_name
    from zoo.jericho.priorzero.priors import PRIORS_DIR, REGISTERED

    assert "smollm2-135m-jericho" in REGISTERED and is_preset_name("smollm2-135m-jericho")
    record = json.loads((PRIORS_DIR / "smollm2-135m-jericho" / "training_record.json").read_text())
    seen = set(record["train_games"]) | set(record["heldout_games"]) | set(record["states_per_game"])
    assert seen and seen <= set(TRAIN_GAMES) and not seen & set(EVAL_GAMES)
    assert record["config"]["llm_path"] == "smollm2-135m"


def test_the_shipped_prior_resolves_by_name_without_importing_the_config(tmp_path) -> None:
    """The installed package declares priors/ as a preset plugin (setup.py entry point), so a process that only
    imports the presets module (bench/prior_quality.py, a user's script) resolves the name too."""
    import subprocess
    import sys

    code = ("import sys; from lzero_ext.llm.presets import is_preset_name; "
            "print(is_preset_name('smollm2-135m-jericho'), 'zoo.jericho.priorzero.priorzero_config' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.split() == ["True", "False"]


def test_held_out_games_are_capped_by_evenly_spaced_states() -> None:
    states = [_state("curses", step, ("a", "b"), (0,)) for step in range(10)]
    assert [s.step for s in spread(states, 4)] == [0, 3, 6, 9]
    assert spread(states, None) == states and spread(states[:3], 4) == states[:3]


def test_weight_average_follows_the_decay_and_swaps_back() -> None:
    import torch

    model = torch.nn.Linear(2, 1, bias=False)
    model.weight.data.fill_(0.0)
    average = _WeightAverage(model, decay=0.9)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0] + [7.0] * 40, start=1):
        model.weight.data.fill_(value)
        average.update(step)
        decay = min(0.9, (1 + step) / (10 + step))  # the warm-up, then the decay itself
        expected = decay * expected + (1 - decay) * value
    assert torch.allclose(average.average[0], torch.full((1, 2), expected))
    with average.applied():
        assert torch.allclose(model.weight, torch.full((1, 2), expected))
    assert torch.equal(model.weight, torch.full((1, 2), 7.0))


def test_pretraining_with_weight_average_saves_the_averaged_adapter(tmp_path, tiny_model_dir) -> None:
    """Same run with and without the average: the held-out game is helped by training, so the last step is saved in
    both; the averaged adapter still carries the early (near-zero) weights, so its lora_B is smaller."""
    from safetensors.torch import load_file

    states = {game: [_state(game, 0, ("take key", "sing"), (0,))] for game in ("curses", "zork2", "advent")}
    norms = {}
    for decay in (0.0, 0.9):
        out = tmp_path / f"avg{decay}"
        record = pretrain(dict(llm_path=str(tiny_model_dir), device="cpu", steps=6, batch_states=2, micro_batch_size=2,
                               lr=3e-3, warmup_steps=0, heldout_games=1, eval_every=6, max_prompt_tokens=256,
                               weight_average=decay, out=str(out)), states_by_game=states)
        assert record["saved_step"] == 6 and record["config"]["weight_average"] == decay
        tensors = load_file(out / "adapter" / "adapter_model.safetensors")
        norms[decay] = sum(float(v.float().norm()) for k, v in tensors.items() if "lora_B" in k)
    assert 0.0 < norms[0.9] < norms[0.0]
