"""Learning benchmark: PriorZero vs PriorZero with a frozen LLM vs LightZero's UniZero vs a random valid-action agent.

Run from the repository root::

    python bench/learning.py --quick                  # CPU, < 15 min: our game, 1 seed, 960 env steps (see --quick)
    python bench/learning.py --device cuda --full     # GPU: 3 games x 3 seeds, full preset, 20k env steps each
    python bench/learning.py --games default detective.z5 --seeds 0 1 --env-steps 2000 --eval-every 400 --jobs 4
    python bench/learning.py --merge gpu/learning.csv cpu/learning.csv --out merged   # one table and plot of both

Every method sees the same protocol, taken from PriorZero's config preset (``--debug`` sizes by default,
``--full`` for the GPU sizes): the same env (``priorzero_jericho``: game, ``max_steps``, action-space size, token
length, tokenizer), the same seeds, the same env-step budget, and greedy evaluation of ``n_evaluator_episode``
episodes at env step 0, every ``--eval-every`` env steps and at the budget. PriorZero's evaluator also scores the
policy sampled from visit counts at T=0.5 on the same episodes (``eval_return_t0.5``): a deterministic policy repeats
itself whenever it revisits a state, so greedy returns of a barely trained agent are mostly loops.

- ``priorzero``: ``python -m zoo.jericho.priorzero.priorzero_orz_entry`` with the preset (tiny LLM by default).
- ``priorzero_frozen``: the same with ``policy.llm.train=False`` (the LLM prior is used at the root, never trained).
- ``unizero``: LightZero 0.2.0's own ``lzero.entry.train_unizero`` on our env, with PriorZero's world-model sizes
  (embed, layers, heads, unroll, context, simulations, batch, envs) and replay ratio. Its text encoder is an HF model
  loaded by path; no download is possible, so a BERT with our encoder's width and our tokenizer is built from a config
  (random weights, seeded) and saved under the exp dir (``--unizero-encoder DIR`` uses a local pretrained one instead,
  whose tokenizer then also tokenizes UniZero's observations). LightZero keeps that encoder frozen, as it does upstream.
  Evaluation is put on env steps by small subclasses of its collector/evaluator (the loop itself is LightZero's).
  Needs LightZero's compiled tree (CPython 3.11): elsewhere it is reported as not run.
- ``random``: uniform over the valid actions; it does not learn, so it is only evaluated at the same env-step points.

Each (method, game, seed) runs as a child process (``--jobs`` at a time) with its own exp dir under ``--out``; its
evaluation points are read back from ``<exp>/log/metrics.jsonl`` (PriorZero, random) or LightZero's TensorBoard
events (``evaluator_step/reward_mean``). ``wall_s`` is seconds since the child was started (imports and set-up
included). Children run in their exp dir, so all of them import the installed package (reinstall after changing the
code). Outputs: ``<out>/learning.csv`` (method, game, seed, env_steps, wall_s, eval_return, eval_return_t0.5,
machine), ``<out>/learning.png`` (mean over seeds, min-max band, per game) and a markdown summary table on stdout
(also ``<out>/summary.md``).
``--merge`` runs nothing: it reads CSVs written here, possibly on different machines (e.g. LightZero's UniZero, which
needs CPython 3.11, on one machine and the other methods on a GPU machine), and writes one CSV, plot and table, with
each source's command, device and protocol lines.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

# bench/common.py (the script's folder is on sys.path)
from common import device_line, machine_name, resolve_game, threads_env

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("priorzero", "priorzero_frozen", "unizero", "random")
STYLES = {"priorzero": ("-", "o"), "priorzero_frozen": ("--", "s"), "unizero": ("-.", "^"), "random": (":", "x")}
LABELS = {"priorzero": "PriorZero", "priorzero_frozen": "PriorZero, LLM frozen", "unizero": "LightZero UniZero",
          "random": "random valid action"}
SCALAR_REWARD_ENV = "priorzero_jericho_scalar_reward"  # our env with 0-d rewards, for LightZero's buffer
QUICK = dict(games=["default"], seeds=[0], env_steps=960, eval_every=320)
SAMPLED_T = 0.5  # PriorZero's extra evaluation temperature (evaluator.extra_temperatures)
SAMPLED_COLUMN = f"eval_return_t{SAMPLED_T:g}"
SAMPLED_METRIC = f"evals/t{SAMPLED_T:g}/reward_mean"  # the evaluator's key for it in metrics.jsonl
FULL = dict(games=["default", "detective.z5", "zork1.z5"], seeds=[0, 1, 2], env_steps=20000, eval_every=2000)


@dataclass
class Point:
    """One evaluation: the CSV row."""

    method: str
    game: str
    seed: int
    env_steps: int
    wall_s: float
    eval_return: float
    sampled_return: float | None = None  # evaluation sampled at SAMPLED_T (PriorZero only)
    machine: str = ""  # where it ran (merged tables mix machines, so wall times need it)


# ---------------------------------------------------------------------------------------------- shared protocol
def game_label(game: str) -> str:
    return "lighthouse (ours)" if game == "default" else Path(game).stem


def priorzero_config(args: argparse.Namespace, game: str, seed: int, exp: str, overrides: dict | None = None):
    """PriorZero's config for this run: the protocol every method copies."""
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    return get_priorzero_config(env_id=game, seed=seed, exp_name=exp, device=args.device, debug=not args.full,
                                overrides=overrides)


def priorzero_overrides(args: argparse.Namespace, n_steps: int, frozen: bool) -> dict:
    """Budget and evaluation in iterations of ``n_steps`` env steps; no periodic checkpoints, no LLM export."""
    overrides: dict[str, Any] = dict(train=dict(max_iter=args.env_steps // n_steps, eval_freq=args.eval_every // n_steps,
                                                save_freq=0, export_llm=False, save_buffer=False),
                                     policy=dict(eval=dict(evaluator=dict(extra_temperatures=[SAMPLED_T]))))
    if frozen:
        overrides["policy"]["llm"] = dict(train=False)
    if args.priorzero_override:  # a variant to benchmark: the user's keys last, so they win
        from lzero_ext.utils.config import deep_merge

        overrides = deep_merge(overrides, json.loads(args.priorzero_override))
    return overrides


# ---------------------------------------------------------------------------------------------- children
def child_command(args: argparse.Namespace, method: str, game: str, seed: int, exp: Path, n_steps: int) -> list[str]:
    if method in ("priorzero", "priorzero_frozen"):
        command = [sys.executable, "-m", "zoo.jericho.priorzero.priorzero_orz_entry", "--env-id", game, "--seed",
                   str(seed), "--exp-name", str(exp), "--device", args.device, "--config-override",
                   json.dumps(priorzero_overrides(args, n_steps, frozen=method == "priorzero_frozen"))]
        return command + ([] if args.full else ["--debug"])
    command = [sys.executable, str(Path(__file__).resolve()), "--_child", method, "--_game", game, "--_seed", str(seed),
               "--_exp", str(exp), "--device", args.device, "--env-steps", str(args.env_steps),
               "--eval-every", str(args.eval_every), "--full" if args.full else "--debug"]
    if args.unizero_encoder:
        command += ["--unizero-encoder", args.unizero_encoder]
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
            returns = []
            for _ in range(cfg.env.n_evaluator_episode):
                env.reset()
                total, done = 0.0, False
                while not done:
                    timestep = env.step(env.random_action())
                    total += float(np.asarray(timestep.reward).reshape(-1)[0])
                    done = bool(timestep.done)
                returns.append(total)
            logger.log({"evals/reward_mean": float(np.mean(returns))}, point)
    finally:
        env.close()
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
        env=dict({k: env[k] for k in env_keys}, tokenizer_path=encoder_dir if args.unizero_encoder else env.tokenizer_path,
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
    encoder = args.unizero_encoder or build_unizero_encoder(
        exp / "encoder", cfg.env.tokenizer_path, cfg.policy.model.encoder.hidden_dim,
        cfg.policy.model.encoder.num_layers, cfg.policy.model.encoder.num_heads, cfg.env.max_seq_len, args._seed)
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

    return [Point(method, game, seed, int(r["step"]), r["time"] - started, float(r["evals/reward_mean"]),
                  sampled_return=float(r[SAMPLED_METRIC]) if SAMPLED_METRIC in r else None)
            for r in read_metrics(exp / "log") if "evals/reward_mean" in r]


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


# ---------------------------------------------------------------------------------------------- report
def by_run(points: Iterable[Point]) -> dict[tuple[str, str], dict[int, list[Point]]]:
    """(method, game) -> seed -> points sorted by env steps."""
    out: dict[tuple[str, str], dict[int, list[Point]]] = {}
    for p in points:
        out.setdefault((p.method, p.game), {}).setdefault(p.seed, []).append(p)
    for seeds in out.values():
        for runs in seeds.values():
            runs.sort(key=lambda p: p.env_steps)
    return out


def mean_curve(seeds: dict[int, list[Point]]) -> list[tuple[int, float, float, float]]:
    """(env steps, mean, min, max) over seeds at each evaluation index (points of a seed line up by index)."""
    length = min(len(r) for r in seeds.values())
    curve = []
    for i in range(length):
        values = [r[i].eval_return for r in seeds.values()]
        steps = int(statistics.mean(r[i].env_steps for r in seeds.values()))
        curve.append((steps, statistics.mean(values), min(values), max(values)))
    return curve


def thresholds(runs: dict[tuple[str, str], dict[int, list[Point]]], games: list[str], given: float | None) -> dict[str, float | None]:
    """--threshold, or per game the random agent's mean return over all its evaluations (what 'learned' must beat)."""
    out: dict[str, float | None] = {}
    for game in games:
        if given is not None:
            out[game] = given
            continue
        values = [p.eval_return for r in runs.get(("random", game), {}).values() for p in r]
        out[game] = statistics.mean(values) if values else None
    return out


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def summary_rows(runs, games: list[str], methods: list[str], failures: dict, limits: dict[str, float | None]):
    rows = []
    for game in games:
        for method in methods:
            seeds = runs.get((method, game))
            label = [game_label(game), LABELS[method]]
            if not seeds:
                why = failures.get((method, game), "no evaluation points")
                rows.append(label + ["not run: " + why] + ["—"] * 6)
                continue
            finals = [r[-1].eval_return for r in seeds.values()]
            sampled = [r[-1].sampled_return for r in seeds.values()]
            curve = mean_curve(seeds)
            best = max(curve, key=lambda c: c[1])
            limit = limits.get(game)
            reached = next((c[0] for c in curve if limit is not None and c[1] >= limit and c[1] > 0), None)
            walls = [r[-1].wall_s for r in seeds.values()]
            rows.append(label + [mean_sd(finals), "—" if None in sampled else mean_sd(sampled),
                                 f"{best[1]:.2f} @ {best[0]:,}",
                                 "—" if method == "random" else "never" if reached is None else f"{reached:,}",
                                 f"{statistics.mean(walls):,.0f}", f"{len(seeds)} / {curve[-1][0]:,}"
                                 + (f" (incomplete: {failures[(method, game)].split(':')[0]})"
                                    if (method, game) in failures else ""),
                                 ", ".join(sorted({p.machine for r in seeds.values() for p in r} - {""})) or "—"])
    return rows


def protocol_lines(args: argparse.Namespace, cfg: Any) -> list[str]:
    """Command, device, date and the shared protocol (``cfg``: PriorZero's config of the first game) of this
    invocation: the head of its summary."""
    import torch

    from zoo.jericho.priorzero.envs.action_indices import max_candidates

    return [
        f"Command: `{args.command}`  ",
        f"Device: {device_line(args.device)}; python {platform.python_version()}, torch {torch.__version__}  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Protocol: {'full' if args.full else 'debug'} preset, {args.env_steps:,} env steps per run, greedy evaluation "
        f"of {cfg.env.n_evaluator_episode} episodes of at most {cfg.env.max_steps} steps at 0, every "
        f"{args.eval_every:,} env steps and at the end; "
        f"{max_candidates(cfg.env.action_space_size, cfg.env.action_index_mode, cfg.env.max_valid_actions)} valid "
        f"actions at most, {cfg.env.action_space_size} action indices ({cfg.env.action_index_mode}); seeds "
        f"{' '.join(map(str, args.seeds))}  ",
    ]


def write_summary(header: list[str], runs, failures, games: list[str], methods: list[str],
                  threshold: float | None) -> str:
    limits = thresholds(runs, games, threshold)
    lines = header + [
        "Threshold: " + ", ".join(f"{game_label(g)} {'n/a' if v is None else f'{v:.2f}'}" for g, v in limits.items())
        + (" (given)" if threshold is not None else " (the random agent's mean evaluation return)")
        + "; reached where a method's mean return is at least the threshold and above 0\n",
        "| game | method | final return (mean ± sd over seeds) | final T=0.5 return | best mean return @ env steps "
        "| env steps to threshold | wall s (mean) | seeds / env steps | machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(runs, games, methods, failures, limits)]
    if failures:
        lines += ["", "Runs that did not finish: " + "; ".join(f"{LABELS[m]} on {game_label(g)}: {why}"
                                                              for (m, g), why in failures.items())]
    return "\n".join(lines)


def plot(runs, games: list[str], methods: list[str], path: Path) -> None:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # DI-engine's import leaves the root logger at DEBUG
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 3.6), squeeze=False)
    for ax, game in zip(axes[0], games):
        for method in methods:
            seeds = runs.get((method, game))
            if not seeds:
                continue
            curve = mean_curve(seeds)
            xs = [c[0] for c in curve]
            style, marker = STYLES[method]  # distinct styles: equal curves (e.g. all zeros) stay visible
            line, = ax.plot(xs, [c[1] for c in curve], linestyle=style, marker=marker, ms=4, label=LABELS[method])
            if len(seeds) > 1:
                ax.fill_between(xs, [c[2] for c in curve], [c[3] for c in curve], color=line.get_color(), alpha=0.15)
        ax.set_title(game_label(game))
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--env-steps", type=int, default=None, help="env-step budget per run")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate every this many env steps")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (world models and LLM)")
    parser.add_argument("--out", default=None, help="output dir (default: bench/results/learning_<time>)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="return for 'env steps to threshold' (default: per game, the random agent's mean)")
    parser.add_argument("--unizero-encoder", default=None,
                        help="local HF encoder dir for UniZero (also its tokenizer); default: a random BERT of our "
                             "encoder's width with our tokenizer")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per child (OMP_NUM_THREADS; default 1: on a small shared CPU more "
                             "threads oversubscribe it and every method slows down; 0 leaves the default)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child run (default: none)")
    parser.add_argument("--priorzero-override", default=None, metavar="JSON",
                        help="config override (JSON, strict keys) for both PriorZero methods: a variant, compared in "
                             "its own table (--merge refuses to mix it with runs of the same method, game and seed)")
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
    return args


def run_child(args: argparse.Namespace, method: str, game: str, seed: int, n_steps: int) -> tuple[list[Point], str | None]:
    """One (method, game, seed) run in its own exp dir; its evaluation points and, if it failed, why."""
    exp = Path(args.out) / method / Path(game_label(game).split()[0]).name / f"seed{seed}"
    exp.mkdir(parents=True, exist_ok=True)
    command = child_command(args, method, game, seed, exp, n_steps)
    print(f"[learning] start {method} {game_label(game)} seed {seed}: {exp}", flush=True)
    started = time.time()
    with open(exp / "child.log", "w") as log:
        try:
            # cwd = the exp dir: every child imports the installed package, as bench scripts do; every method gets
            # the same thread count (the CPU is the shared resource being compared)
            rc = subprocess.run(command, cwd=exp, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout,
                                env=threads_env(args.threads)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    got = read_points(method, game, seed, exp, started)
    for point in got:
        point.machine = args.machine
    print(f"[learning] done {method} {game_label(game)} seed {seed}: exit {rc}, {len(got)} evaluation points, "
          f"{time.time() - started:.0f} s", flush=True)
    if rc == 0:
        return got, None
    tail = (exp / "child.log").read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
    return got, f"exit {rc}: {tail[0][:120]} (see {exp / 'child.log'})"


def run_all(args: argparse.Namespace, games: list[str], n_steps: int) -> tuple[list[Point], dict[tuple[str, str], str]]:
    """Every (method, game, seed) child, ``--jobs`` at a time (the learning methods first: they take longest)."""
    order = sorted(((m, g, s) for g in games for s in args.seeds for m in args.methods),
                   key=lambda run: run[0] == "random")
    points: list[Point] = []
    failures: dict[tuple[str, str], str] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_child, args, method, game, seed, n_steps): (method, game)
                   for method, game, seed in order}
        for future in as_completed(futures):
            got, failure = future.result()
            points += got
            if failure is not None:
                failures[futures[future]] = failure
    return points, failures


def read_csv(path: Path) -> list[Point]:
    with open(path, newline="") as handle:
        return [Point(row["method"], row["game"], int(row["seed"]), int(row["env_steps"]), float(row["wall_s"]),
                      float(row["eval_return"]), float(row[SAMPLED_COLUMN]) if row.get(SAMPLED_COLUMN) else None,
                      row.get("machine", ""))
                for row in csv.DictReader(handle)]


def merged_points(paths: list[str]) -> list[Point]:
    """The points of several CSVs; a run (method, game, seed) found in two of them is an error, not a mix."""
    points, origin = [], {}
    for path in paths:
        for point in read_csv(Path(path)):
            run = (point.method, point.game, point.seed)
            if origin.setdefault(run, path) != path:
                raise SystemExit(f"{point.method} on {point.game}, seed {point.seed}, is in both {origin[run]} and "
                                 f"{path}: merge runs of one configuration (a --priorzero-override variant is a "
                                 f"separate comparison)")
            points.append(point)
    return points


def source_lines(paths: list[str]) -> list[str]:
    """Each merged CSV with the command, device and protocol lines of the summary written beside it."""
    lines = []
    for path in map(Path, paths):
        lines.append(f"Source `{path.name}` ({path.parent.name}):  ")
        summary = path.with_name("summary.md")
        if summary.is_file():
            keep = ("Command:", "Device:", "Protocol:")
            lines += ["- " + line for line in summary.read_text().splitlines() if line.startswith(keep)]
    return lines


def write_csv(points: list[Point], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "game", "seed", "env_steps", "wall_s", "eval_return", SAMPLED_COLUMN, "machine"])
        for p in points:
            sampled = "" if p.sampled_return is None else f"{p.sampled_return:g}"
            writer.writerow([p.method, game_label(p.game), p.seed, p.env_steps, f"{p.wall_s:.1f}", f"{p.eval_return:g}",
                             sampled, p.machine])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args._child is not None:
        {"random": run_random, "unizero": run_unizero}[args._child](args)
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
        args.machine = machine_name(args.device)
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
