"""TrainSchedule.plan: which phase each iteration is in, whether it collects, how many updates each learner runs."""
import pytest

from lzero_ext.entry.schedule import TrainSchedule


def _plans(n: int, **cfg):
    schedule = TrainSchedule(dict(cfg))
    return [schedule.plan(i) for i in range(n)]


def test_parallel_is_the_default_and_follows_the_frequencies():
    plans = _plans(6, wm_train_freq=2, llm_train_freq=3, wm_updates_per_iter=4, llm_updates_per_iter=2)
    assert [p.phase for p in plans] == ["parallel"] * 6
    assert all(p.collect for p in plans)
    assert [p.wm_updates for p in plans] == [4, 0, 4, 0, 4, 0]
    assert [p.llm_updates for p in plans] == [2, 0, 0, 2, 0, 0]


def test_parallel_with_zero_updates_switches_a_learner_off():
    plans = _plans(3, llm_updates_per_iter=0)
    assert not any(p.train_llm for p in plans) and all(p.train_world_model for p in plans)


def test_sequential_cycles_wm_phase_then_llm_updates_without_collection():
    plans = _plans(12, mode="sequential", wm_phase_iters=3, llm_phase_updates=5, llm_updates_per_iter=2,
                   wm_updates_per_iter=4, llm_phase_collect=False)
    # 3 world-model iterations, then ceil(5 / 2) = 3 LLM iterations doing 2 + 2 + 1 updates, then again.
    assert [p.phase for p in plans] == ["wm"] * 3 + ["llm"] * 3 + ["wm"] * 3 + ["llm"] * 3
    assert [p.llm_updates for p in plans[:6]] == [0, 0, 0, 2, 2, 1]
    assert [p.wm_updates for p in plans[:6]] == [4, 4, 4, 0, 0, 0]
    assert [p.collect for p in plans[:6]] == [True] * 3 + [False] * 3
    assert sum(p.llm_updates for p in plans) == 10


def test_alternating_switches_every_k_iterations_and_keeps_collecting_by_default():
    plans = _plans(8, mode="alternating", alternate_every=2, wm_updates_per_iter=3, llm_updates_per_iter=1)
    assert [p.phase for p in plans] == ["wm", "wm", "llm", "llm"] * 2
    assert all(p.collect for p in plans)
    assert [(p.wm_updates, p.llm_updates) for p in plans[:4]] == [(3, 0), (3, 0), (0, 1), (0, 1)]


def test_the_frequency_helpers_agree_with_the_plan():
    schedule = TrainSchedule(dict(mode="alternating", alternate_every=1))
    assert [schedule.train_world_model(i) for i in range(4)] == [True, False, True, False]
    assert [schedule.train_llm(i) for i in range(4)] == [False, True, False, True]


@pytest.mark.parametrize("cfg, message", [
    (dict(mode="interleaved"), "train.mode must be one of"),
    (dict(mode="sequential", wm_phase_iters=0), "wm_phase_iters must be >= 1"),
    (dict(mode="alternating", alternate_every=0), "alternate_every must be >= 1"),
    (dict(mode="sequential", llm_updates_per_iter=0), "needs train.llm_updates_per_iter >= 1"),
    (dict(mode="alternating", wm_updates_per_iter=0), "needs train.wm_updates_per_iter >= 1"),
])
def test_invalid_values_are_clear_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        TrainSchedule(cfg)


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(KeyError, match="llm_phase_collect"):
        TrainSchedule(dict(llm_phase_colect=False))


@pytest.mark.parametrize("cfg, expected", [
    (dict(max_iter=10, wm_train_freq=2, wm_updates_per_iter=3, llm_train_freq=5, llm_updates_per_iter=2), (15, 4)),
    (dict(max_iter=12, mode="alternating", alternate_every=3, wm_updates_per_iter=4, llm_updates_per_iter=1), (24, 6)),
])
def test_total_updates_sum_the_plan_over_the_run(cfg, expected):
    schedule = TrainSchedule(cfg)
    assert schedule.total_updates() == expected
    plans = [schedule.plan(i) for i in range(cfg["max_iter"])]
    assert expected == (sum(p.wm_updates for p in plans), sum(p.llm_updates for p in plans))
