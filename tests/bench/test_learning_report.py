"""bench/learning.py: the parts that turn child runs into the CSV/summary, and the UniZero adapters (no training)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPT.parent))  # as when run as `python bench/learning.py`: bench/common.py
        yield from _load_learning()


def _load_learning():
    spec = importlib.util.spec_from_file_location("bench_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _points(learning, method, returns_by_seed, every=32):
    return [learning.Point(method, "default", seed, i * every, 10.0 * (i + 1), r)
            for seed, returns in returns_by_seed.items() for i, r in enumerate(returns)]


def test_summary_final_best_threshold_and_missing_method(learning):
    points = _points(learning, "priorzero", {0: [0.0, 1.0, 3.0], 1: [0.0, 3.0, 1.0]})
    points += _points(learning, "random", {0: [1.0, 2.0, 1.5], 1: [1.5, 1.0, 2.0]})
    runs = learning.by_run(points)
    limits = learning.thresholds(runs, ["default"], None)
    assert limits["default"] == pytest.approx(1.5)
    rows = learning.summary_rows(runs, ["default"], ["priorzero", "random", "unizero"],
                                 {("unizero", "default"): "exit 1: boom"}, limits)
    priorzero, random_row, unizero = rows
    assert random_row[7] == "—"  # the random agent does not learn: no steps-to-threshold
    assert priorzero[2] == "2.00 ± 1.41"  # final returns 3 and 1
    assert priorzero[3] == priorzero[4] == priorzero[5] == "—"  # no sampled evaluation, score, training return
    assert priorzero[6] == "2.00 @ 32"  # seed means 0, 2, 2: the first best
    assert priorzero[7] == "32"  # first mean >= 1.5
    assert priorzero[8] == "30"
    assert unizero[2] == "not run: exit 1: boom"
    assert len(unizero) == len(priorzero) == learning.SUMMARY_HEADER.count("|") - 1


def test_threshold_never_reached_and_given_threshold(learning):
    runs = learning.by_run(_points(learning, "priorzero", {0: [0.0, 1.0]}))
    rows = learning.summary_rows(runs, ["default"], ["priorzero"], {}, learning.thresholds(runs, ["default"], 5.0))
    assert rows[0][7] == "never"
    assert rows[0][9] == "1 / 32"


def test_a_failed_run_with_points_is_marked_incomplete(learning):
    runs = learning.by_run(_points(learning, "unizero", {0: [2.0]}))
    rows = learning.summary_rows(runs, ["default"], ["unizero"], {("unizero", "default"): "exit timeout: (see x)"},
                                 {"default": 1.0})
    assert rows[0][9] == "1 / 0 (incomplete: exit timeout)"


def test_unizero_points_read_from_lightzero_tensorboard_events(learning, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))  # the writer train_unizero uses
    for step, value in [(0, 0.5), (60, 2.0)]:
        writer.add_scalar("evaluator_step/reward_mean", value, step)
        writer.add_scalar("evaluator_iter/reward_mean", value, step // 4)
    writer.close()
    got = learning.read_unizero_points("default", 3, tmp_path, started=0.0)
    assert [(p.env_steps, p.eval_return, p.seed) for p in got] == [(0, 0.5, 3), (60, 2.0, 3)]
    assert learning.read_unizero_points("default", 3, tmp_path / "missing", 0.0) == []


def test_eval_points_end_at_budget(learning):
    assert learning.eval_points(480, 160) == [0, 160, 320, 480]
    assert learning.eval_points(500, 160) == [0, 160, 320, 480, 500]


def test_scalar_reward_env_gives_lightzero_0d_rewards(learning):
    from ding.utils import ENV_REGISTRY

    learning.register_scalar_reward_env()
    env = ENV_REGISTRY.get(learning.SCALAR_REWARD_ENV)(dict(max_steps=2, generate_valid_actions=False,
                                                           look_and_inventory=False))
    try:
        env.reset()
        timestep = env.step("look")
        assert np.asarray(timestep.reward).shape == ()
    finally:
        env.close()


def test_unizero_config_copies_priorzero_protocol(learning, tmp_path):
    args = learning.parse_args(["--_child", "unizero", "--_game", "default", "--_exp", str(tmp_path), "--quick"])
    main, create = learning.unizero_configs(args, "lz", str(tmp_path / "encoder"))
    pz, _ = learning.priorzero_config(args, "default", 0, str(tmp_path / "pz"))
    wm = main.policy.model.world_model_cfg
    assert (wm.embed_dim, wm.num_layers, wm.num_heads) == (pz.policy.model.embed_dim, pz.policy.model.num_layers,
                                                          pz.policy.model.num_heads)
    assert main.policy.num_simulations == pz.policy.mcts.num_simulations
    assert main.policy.batch_size == pz.policy.learn.batch_size
    assert main.env.max_steps == pz.env.max_steps and main.env.n_evaluator_episode == pz.env.n_evaluator_episode
    assert main.policy.replay_ratio == pytest.approx(pz.train.wm_updates_per_iter / pz.policy.collect.collector.n_steps)
    assert create.env.type == learning.SCALAR_REWARD_ENV


def test_run_all_runs_every_child_in_parallel_and_collects_failures(learning, monkeypatch):
    import threading

    args = learning.parse_args(["--games", "default", "--seeds", "0", "1", "--methods", "priorzero", "random",
                                "--jobs", "3"])
    started, lock, release = [], threading.Lock(), threading.Barrier(3, timeout=10)

    def fake_child(args, method, game, seed, n_steps):
        with lock:
            started.append((method, seed))
        if len(started) <= 3:
            release.wait()  # three children at once, or the barrier times out and the test fails
        point = learning.Point(method, game, seed, 0, 1.0, float(seed))
        return [point], ("exit 1: boom" if (method, seed) == ("random", 1) else None)

    monkeypatch.setattr(learning, "run_child", fake_child)
    points, failures = learning.run_all(args, ["default"], n_steps=32)
    assert sorted((p.method, p.seed) for p in points) == [("priorzero", 0), ("priorzero", 1), ("random", 0),
                                                          ("random", 1)]
    assert started[:2] == [("priorzero", 0), ("priorzero", 1)]  # the learning methods start first
    assert failures == {("random", "default"): "exit 1: boom"}


def test_merge_combines_csvs_of_different_machines(learning, tmp_path, capsys):
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    for folder, method, machine in [(gpu, "priorzero", "H100 + 16-core CPU"), (cpu, "unizero", "2-core CPU")]:
        folder.mkdir()
        points = _points(learning, method, {0: [0.0, 2.0], 1: [1.0, 3.0]})
        for p in points:
            p.machine = machine
            p.sampled_return = p.eval_return + 1 if method == "priorzero" else None
        learning.write_csv(points, folder / "learning.csv")
        (folder / "summary.md").write_text(f"Command: `run {method}`  \nDevice: {machine}  \nother line\n")
    random_points = _points(learning, "random", {0: [1.0, 1.0]})
    learning.write_csv(random_points, cpu / "random.csv")
    learning.main(["--merge", str(gpu / "learning.csv"), str(cpu / "learning.csv"), str(cpu / "random.csv"),
                   "--out", str(tmp_path / "merged")])
    merged = learning.read_csv(tmp_path / "merged" / "learning.csv")
    assert len(merged) == 10 and {p.machine for p in merged} == {"H100 + 16-core CPU", "2-core CPU", ""}
    summary = (tmp_path / "merged" / "summary.md").read_text()
    assert "Command: `run priorzero`" in summary and "Device: 2-core CPU" in summary and "other line" not in summary
    rows = {line.split("|")[2].strip(): line for line in summary.splitlines() if line.startswith("| lighthouse")}
    assert set(rows) == {"PriorZero", "LightZero UniZero", "random valid action"}
    assert "| 2.50 ± 0.71 | 3.50 ± 0.71 |" in rows["PriorZero"]  # final greedy, then final sampled
    assert "| 2.50 ± 0.71 | — |" in rows["LightZero UniZero"]
    assert rows["LightZero UniZero"].rstrip(" |").endswith("2-core CPU")
    assert (tmp_path / "merged" / "learning.png").is_file()


def test_priorzero_runs_also_score_the_sampled_policy_and_it_is_read_back(learning, tmp_path):
    from lzero_ext.utils.metrics import MetricsLogger

    args = learning.parse_args(["--env-steps", "64", "--eval-every", "32"])
    frozen = learning.priorzero_overrides(args, 32, "priorzero_frozen")
    assert frozen["policy"]["eval"]["evaluator"]["extra_temperatures"] == [learning.SAMPLED_T]
    assert frozen["policy"]["llm"]["train"] is False and frozen["train"]["max_iter"] == 2
    assert "llm" not in learning.priorzero_overrides(args, 32, "priorzero")["policy"]
    args = learning.parse_args(["--env-steps", "64", "--eval-every", "32", "--priorzero-override",
                                '{"policy": {"llm": {"trainer": {"kl_coef": 0.5}}}, "train": {"save_freq": 5}}'])
    variant = learning.priorzero_overrides(args, 32, "priorzero_frozen")
    assert variant["policy"]["llm"] == {"train": False, "trainer": {"kl_coef": 0.5}} and variant["train"]["save_freq"] == 5
    assert variant["policy"]["eval"]["evaluator"]["extra_temperatures"] == [learning.SAMPLED_T]
    logger = MetricsLogger(tmp_path / "log")
    logger.log({"evals/reward_mean": 1.0, f"evals/t{learning.SAMPLED_T:g}/reward_mean": 2.5}, 0)
    logger.log({"evals/reward_mean": 3.0}, 32)
    logger.close()
    got = learning.read_points("priorzero", "default", 0, tmp_path, started=0.0)
    assert [(p.env_steps, p.eval_return, p.sampled_return) for p in got] == [(0, 1.0, 2.5), (32, 3.0, None)]
    learning.write_csv(got, tmp_path / "learning.csv")
    assert [p.sampled_return for p in learning.read_csv(tmp_path / "learning.csv")] == [2.5, None]


def test_merge_refuses_the_same_run_from_two_sources(learning, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        learning.write_csv(_points(learning, "priorzero", {0: [1.0]}), tmp_path / name / "learning.csv")
    with pytest.raises(SystemExit, match="priorzero on lighthouse .ours., seed 0, is in both"):
        learning.merged_points([str(tmp_path / "a" / "learning.csv"), str(tmp_path / "b" / "learning.csv")])
