"""bench/seed_sweep.py: variant parsing and reading the last logged metrics (the children are the real entry)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.bench.test_learning_report import SCRIPT


@pytest.fixture(scope="module")
def sweep():
    path = SCRIPT.parent / "seed_sweep.py"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPT.parent))  # bench/common.py, as when run as a script
        spec = importlib.util.spec_from_file_location("bench_seed_sweep", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def test_variants_are_name_and_json(sweep):
    assert sweep.parse_variant('hash={"env": {"action_index_mode": "text_hash"}}') == (
        "hash", {"env": {"action_index_mode": "text_hash"}})
    with pytest.raises(SystemExit, match="NAME=JSON"):
        sweep.parse_variant('{"env": {}}')
    with pytest.raises(SystemExit, match="not JSON"):
        sweep.parse_variant("hash={env}")


def test_last_logged_value_of_each_metric_wins(sweep, tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"evals/reward_mean": 0.0, "counters/iteration": 1.0}, {"collect/return_last100": 2.0},
               {"evals/reward_mean": 3.0, "counters/iteration": 9.0}]
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert sweep.last_metrics(tmp_path) == {"evals/reward_mean": 3.0, "counters/iteration": 9.0,
                                            "collect/return_last100": 2.0}
    assert sweep.last_metrics(tmp_path / "missing") == {}
    assert sweep.mean_sd([1.0, 3.0]) == "2.00 ± 1.41 (n=2)" and sweep.mean_sd([]) == "n/a"
