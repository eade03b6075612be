"""bench/prior_quality.py: the metrics on hand-made scores, and one end-to-end run on the tiny default LM."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "prior_quality.py"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPT.parent))  # as when run as `python bench/prior_quality.py`: bench/common.py
        spec = importlib.util.spec_from_file_location("bench_prior_quality", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
        sys.modules.pop(spec.name, None)


def test_top1_splits_ties(bench):
    assert bench.top1(np.array([0.1, 0.5, 0.2]), [1]) == 1.0
    assert bench.top1(np.array([0.1, 0.5, 0.2]), [0, 2]) == 0.0
    assert bench.top1(np.array([0.5, 0.5, 0.5, 0.1]), [0]) == pytest.approx(1 / 3)
    assert bench.top1(np.array([0.5, 0.5, 0.5, 0.1]), [0, 2, 3]) == pytest.approx(2 / 3)
    assert bench.top1(np.zeros(5), [1, 4]) == pytest.approx(2 / 5)  # uniform: the gold fraction


def test_reciprocal_rank_of_the_best_gold_with_ties(bench):
    assert bench.reciprocal_rank(np.array([3.0, 2.0, 1.0]), [2]) == pytest.approx(1 / 3)
    assert bench.reciprocal_rank(np.array([3.0, 2.0, 1.0]), [1, 2]) == pytest.approx(1 / 2)  # best gold counts
    # One non-gold above, gold tied with one other: rank 2 or 3 with equal odds.
    assert bench.reciprocal_rank(np.array([3.0, 2.0, 2.0]), [2]) == pytest.approx((1 / 2 + 1 / 3) / 2)
    # Uniform over 3 candidates with 2 gold: the first gold is 1st with p 2/3, 2nd with p 1/3.
    assert bench.reciprocal_rank(np.zeros(3), [0, 1]) == pytest.approx(2 / 3 + 1 / 3 / 2)
    # Uniform over K with one gold: the mean of 1/1 ... 1/K.
    assert bench.reciprocal_rank(np.zeros(4), [3]) == pytest.approx(np.mean([1, 1 / 2, 1 / 3, 1 / 4]))


def test_gold_mass_and_state_metrics_normalise(bench):
    logprobs = np.log(np.array([0.5, 0.3, 0.2]))
    assert bench.gold_mass(logprobs, [1, 2]) == pytest.approx(0.5)
    unnormalised = bench.state_metrics(np.array([2.0, 1.0, 1.0]), [0])  # scores, not log-probs: softmax first
    assert unnormalised["gold_mass"] == pytest.approx(np.exp(2) / (np.exp(2) + 2 * np.e))
    assert unnormalised["top1"] == 1.0 and unnormalised["mrr"] == 1.0


def test_bootstrap_interval_brackets_the_mean(bench):
    rng = np.random.default_rng(0)
    values = rng.random(200)
    low, high = bench.bootstrap_ci(values, 500, rng)
    assert low < values.mean() < high and high - low < 0.2
    assert bench.bootstrap_ci([1.0, 1.0, 1.0], 100, rng) == (1.0, 1.0)


def test_baselines_prefer_short_candidates(bench):
    scores = bench.baseline_scores(["open the door", "n"], lambda text: len(text))
    assert scores["fewest words"].argmax() == 1 and scores["fewest tokens"].argmax() == 1
    assert (scores["uniform"] == 0).all()


def test_end_to_end_on_the_tiny_lm(bench, tmp_path, single_torch_thread):
    from zoo.jericho.priorzero.game_splits import games_dir

    if not (games_dir() / "detective.z5").is_file():
        pytest.skip(f"the Jericho suite is not at {games_dir()} (set PRIORZERO_JERICHO_GAMES)")
    out = tmp_path / "quality.json"
    rows = bench.main(["--games", "detective", "--max-states", "3", "--score-rule", "sum", "pmi",
                       "--bootstrap", "50", "--states-cache", str(tmp_path / "states"), "--json", str(out),
                       "--csv", str(tmp_path / "quality.csv")])
    names = {(r.game, r.prior) for r in rows}
    for game in ("detective", "all"):
        for prior in ("LLM sum", "LLM pmi", "uniform", "fewest tokens", "fewest words"):
            assert (game, prior) in names
    for row in rows:
        assert 0 < row.states <= 3
        for metric in ("top1", "mrr", "gold_mass"):
            value, low, high = getattr(row, metric), getattr(row, f"{metric}_low"), getattr(row, f"{metric}_high")
            assert 0.0 <= low <= value <= high <= 1.0
        assert (row.states_per_s is not None) == row.prior.startswith("LLM ")
    uniform = next(r for r in rows if r.prior == "uniform" and r.game == "all")
    assert uniform.top1 == pytest.approx(uniform.gold_mass)  # both are the gold fraction
    saved = json.loads(out.read_text())
    assert saved["settings"]["max_prompt_tokens"] == 512 and len(saved["rows"]) == len(rows)
    assert (tmp_path / "quality.csv").read_text().count("\n") == len(rows) + 1
