"""Training-loop speed: the same PriorZero config with the LLM prior and world-model only.

Run from the repository root::

    python bench/speed.py                 # debug sizes, 12 measured iterations per variant (CPU: a few minutes)
    python bench/speed.py --quick         # 4 measured iterations
    python bench/speed.py --full --device cuda --llm-path <hf dir>   # GPU-sized run
    python bench/speed.py --full --device cuda --llm-shape qwen2.5-0.5b --config-override '{"policy": {...}}'
    python bench/speed.py ... --variants llm --config-override '{...}' --config-override '{"collect": {"backend": "async"}}'

Each variant runs in its own subprocess (so peak RSS and GPU memory are its own): ``HybridTrainer`` built from
``get_priorzero_config``, ``--warmup`` iterations (default 1; not counted), then N iterations of
``trainer._iteration()`` (the loop body of ``HybridTrainer.run``) with evaluation, checkpoints and LLM export off,
in a temporary exp dir. Figures are medians over the measured iterations of the loop's own ``perf/*`` metrics. The
limits: collection env steps/s over Jericho's raw step rate for the same game (``PriorZeroJerichoEnv.step`` with
valid-action generation and look/inventory off), and on CUDA the LLM's achieved TFLOP/s over the card's dense bf16
peak. Where the time goes: mean seconds per iteration waiting for collection, training each learner and publishing
weights (means, not medians: the LLM trains only every ``train.llm_train_freq`` iterations; measure a multiple of it
to count it fairly). For a steady-state figure give ``--warmup`` a few iterations: the first ones pay one-off costs
(the prior's compile, the first LLM optimiser step, an acting worker process's start-up).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import device_line, resolve_game  # bench/common.py (the script's folder is on sys.path)

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("llm", "wm")
VARIANT_LABELS = {"llm": "with LLM prior", "wm": "world-model only"}
# (metric key in the loop's metrics, row label); medians over measured iterations where the metric was logged.
RATE_METRICS = (
    ("perf/collect_env_steps_per_s", "collection env steps/s"),
    ("perf/mcts_simulations_per_s", "MCTS simulations/s"),
    ("perf/prior_states_per_s", "LLM prior states/s"),
    ("perf/wm_train_steps_per_s", "world-model train steps/s"),
    ("perf/llm_train_samples_per_s", "LLM train samples/s"),
    ("perf/collect_policy_fraction", "collection time in the policy (search + prior), fraction"),
)
# (metric key, row label): mean seconds per measured iteration (0 where the phase did not run).
SECONDS_METRICS = (
    ("perf/iteration_seconds", "seconds per iteration (all)"),
    ("perf/collect_seconds", "… collecting (async: waiting for data)"),
    ("perf/wm_train_seconds", "… world-model training"),
    ("perf/llm_train_seconds", "… LLM training"),
    ("perf/sync_weights_seconds", "… publishing weights to acting copies"),
)
# Candidate actions are short commands ("open the mailbox"); tokens per candidate for the FLOP estimate.
TOKENS_PER_CANDIDATE = 6


@dataclass
class VariantResult:
    """What one variant's subprocess measured (JSON across the process boundary)."""

    variant: str
    device: str
    medians: dict[str, float | None]
    overall_env_steps_per_s: float
    mean_seconds: dict[str, float]
    iterations: int
    wall_s: float
    peak_rss_mib: float
    peak_gpu_mib: float | None
    llm_non_embedding_params: int | None
    tokens_per_state: int | None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- config
def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch reports no CUDA device on this machine")
    return device


def build_config(args: argparse.Namespace, variant: str, exp_dir: Path):
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    from lzero_ext.utils.config import deep_merge

    overrides: dict = dict(train=dict(eval_freq=0, save_freq=0, export_llm=False,
                                      max_iter=args.warmup + args.iterations))
    user: dict = {}
    for text in args.config_override or []:  # later overrides win
        user = deep_merge(user, json.loads(text))
    overrides = deep_merge(user, overrides)
    if variant == "wm":
        overrides = deep_merge(overrides, dict(policy=dict(llm=dict(enable=False), root_prior=dict(mode="wm"))))
    return get_priorzero_config(env_id=args.game, seed=args.seed, exp_name=str(exp_dir), llm_path=args.llm_path,
                                device=args.device, debug=not args.full, overrides=overrides)


def ensure_shaped_llm(shape: str) -> str:
    """A random-initialised causal LM with a public model's shape (``bench/llm_prior_speed.py``'s SHAPES) and the
    tiny default tokenizer, saved once as an HF dir: no weights can be downloaded on the GPU machine, and only the
    shapes matter for speed. The vocabulary is the tiny tokenizer's (the LM head is evaluated only at candidate
    tokens, so the non-embedding layers dominate the cost)."""
    from llm_prior_speed import SHAPES  # the sibling benchmark script

    directory = Path(tempfile.gettempdir()) / f"priorzero_random_{shape}"
    if (directory / "config.json").is_file():
        return str(directory)
    import torch
    import transformers

    from zoo.jericho.priorzero.envs.jericho_env import load_tokenizer

    tokenizer = load_tokenizer(None)
    dims = {**SHAPES[shape], "vocab_size": len(tokenizer)}
    config = transformers.Qwen2Config(max_position_embeddings=4096, rope_theta=1e6, pad_token_id=tokenizer.pad_token_id,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **dims)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).to(torch.bfloat16)
    partial = directory.with_name(directory.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(directory)
    return str(directory)


# ---------------------------------------------------------------------------------------------- one variant
def llm_size(trainer, cfg) -> tuple[int | None, int | None]:
    """Non-embedding parameters of the prior's LLM and the estimated tokens one prior state costs."""
    from zoo.jericho.priorzero.envs.action_indices import max_candidates

    prior = trainer.policy.llm_prior
    if prior is None or not hasattr(prior, "model"):
        return None, None
    embedding = prior.model.get_input_embeddings().weight
    params = sum(p.numel() for p in prior.model.parameters() if p is not embedding)
    candidates = max_candidates(cfg.env.action_space_size, cfg.env.action_index_mode, cfg.env.max_valid_actions)
    tokens = int(cfg.policy.llm.prompt.max_prompt_tokens) + candidates * TOKENS_PER_CANDIDATE
    return params, tokens


def peak_rss_mib() -> float:
    """ru_maxrss of this process plus its (waited-for) children, KiB on Linux."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def run_variant(args: argparse.Namespace, variant: str) -> VariantResult:
    import torch

    from lzero_ext.entry.hybrid_loop import HybridTrainer

    with tempfile.TemporaryDirectory(prefix=f"priorzero_speed_{variant}_") as tmp:
        cfg, create_cfg = build_config(args, variant, Path(tmp) / "exp")
        trainer = HybridTrainer(cfg, create_cfg)
        try:
            for _ in range(args.warmup):  # model load, first buffer fill, lazy prior, compiles
                trainer._iteration()  # noqa: SLF001
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            rows, start, steps_before = [], time.perf_counter(), trainer.collector.envstep
            for _ in range(args.iterations):
                rows.append(trainer._iteration())  # noqa: SLF001 - the loop body of HybridTrainer.run
                _progress(variant, rows[-1], trainer.collector.envstep - steps_before, time.perf_counter() - start)
            wall = time.perf_counter() - start
            env_steps = trainer.collector.envstep - steps_before
            params, tokens = llm_size(trainer, cfg)
        finally:
            trainer.close()
    medians = {}
    for key, _ in RATE_METRICS:
        values = [row[key] for row in rows if key in row]
        medians[key] = statistics.median(values) if values else None
    seconds = {key: sum(row.get(key, 0.0) for row in rows) / len(rows) for key, _ in SECONDS_METRICS}
    gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    notes = []
    staleness = [row["async/staleness"] for row in rows if "async/staleness" in row]
    if staleness:
        notes.append(f"async collection: mean staleness {statistics.mean(staleness):.2f} publishes, "
                     f"{rows[-1].get('async/dropped_stale_chunks', 0):.0f} stale chunks dropped"
                     + ("; peak GPU memory is the learner process's (an acting worker process has its own)"
                        if args.device == "cuda" else ""))
    llm_updates = sum(1 for row in rows if "perf/llm_train_seconds" in row)
    notes.append(f"{llm_updates} of {len(rows)} measured iterations ran an LLM update")
    return VariantResult(variant, args.device, medians, env_steps / wall, seconds, len(rows), wall, peak_rss_mib(),
                         gpu, params, tokens, notes)


def _progress(variant: str, row: dict[str, float], env_steps: int, elapsed: float) -> None:
    """One line per measured iteration on stderr, so a run cut off by a time limit still shows its figures."""
    shown = {label: row.get(key) for key, label in (*RATE_METRICS, *SECONDS_METRICS)}
    text = ", ".join(f"{label.lstrip('… ')} {value:.3g}" for label, value in shown.items() if value is not None)
    print(f"[speed {variant}] {env_steps} env steps in {elapsed:.1f} s ({env_steps / elapsed:.2f}/s): {text}",
          file=sys.stderr, flush=True)


def run_variant_subprocess(args: argparse.Namespace, variant: str) -> VariantResult:
    """Fresh interpreter per variant: ru_maxrss and the CUDA allocator's peak would otherwise carry over."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), *args.forwarded, "--device", args.device,
               "--_variant", variant, "--_out", str(out)]
    try:
        subprocess.run(command, check=True, cwd=REPO_ROOT)
        return VariantResult(**json.loads(out.read_text()))
    finally:
        out.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- raw env
def raw_step_rate(game: str, tokenizer_path: str | None, steps: int) -> float:
    """Plain env steps/s: walkthrough (or the default game's) actions, no valid actions, no look/inventory."""
    from env_speed import _walkthrough_for, measure_plain_steps  # the sibling benchmark script
    from zoo.jericho.priorzero.envs.game_backend import inspect_story
    from zoo.jericho.priorzero.envs.jericho_env import resolve_game_path

    path = resolve_game_path(game)
    walkthrough = _walkthrough_for(inspect_story(path))
    return measure_plain_steps(path, walkthrough, steps, tokenizer_path, look_and_inventory=False)


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _tflops(result: VariantResult, rate: float | None, flops_per_token_param: int) -> float | None:
    if rate is None or result.llm_non_embedding_params is None or result.device != "cuda":
        return None
    return flops_per_token_param * result.llm_non_embedding_params * result.tokens_per_state * rate / 1e12


def table_rows(results: dict[str, VariantResult], raw_rate: float, peak_tflops: float) -> list[tuple[str, ...]]:
    ordered = list(results.values())
    rows: list[tuple[str, ...]] = []
    for key, label in RATE_METRICS:
        values = [r.medians[key] for r in ordered]
        limit = "—"
        if key == "perf/collect_env_steps_per_s":
            limit = f"raw step {raw_rate:,.0f}/s: " + " / ".join(f"{_fmt(v and v / raw_rate * 100, 2)}%" for v in values)
        elif key in ("perf/prior_states_per_s", "perf/llm_train_samples_per_s") and "llm" in results:
            llm = results["llm"]
            factor, mark = (2, "¹") if key == "perf/prior_states_per_s" else (6, "¹²")
            tf = _tflops(llm, llm.medians[key], factor)
            limit = "n/a (CPU)" if llm.device != "cuda" else f"{_fmt(tf)} TFLOP/s = {_fmt(tf and tf / peak_tflops * 100)}% of {peak_tflops:g}{mark}"
        rows.append((label, *(_fmt(v, 2 if key.endswith("fraction") else 1) for v in values), limit))
    rows.append(("overall env steps/s (collect + train)", *(_fmt(r.overall_env_steps_per_s, 2) for r in ordered), "—"))
    for key, label in SECONDS_METRICS:
        rows.append((label, *(_fmt(r.mean_seconds.get(key), 2) for r in ordered), "mean"))
    rows.append(("peak CPU RSS MiB (self + children)", *(_fmt(r.peak_rss_mib, 0) for r in ordered), "—"))
    rows.append(("peak GPU memory MiB", *(_fmt(r.peak_gpu_mib, 0) for r in ordered), "—"))
    rows.append(("measured iterations / wall s", *(f"{r.iterations} / {r.wall_s:.0f}" for r in ordered), "—"))
    return rows


def print_report(args: argparse.Namespace, results: dict[str, VariantResult], raw_rate: float, device: str) -> None:
    import torch
    import transformers

    llm = results.get("llm")
    print(f"Command: `{args.command.strip()}`  ")
    print(f"Device: {device}  ")
    print(f"Versions: python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}  ")
    print(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ")
    print(f"Config: {'full' if args.full else 'debug'} preset, game {args.game}, LLM {args.llm_path or 'tiny default'}, "
          f"{args.iterations} measured iterations after {args.warmup} warm-up, medians\n")
    print("| metric | " + " | ".join(VARIANT_LABELS[v] for v in results) + " | limit / fraction |")
    print("|---|" + "---:|" * len(results) + "---|")
    for row in table_rows(results, raw_rate, args.peak_tflops):
        print("| " + " | ".join(row) + " |")
    for result in results.values():
        for note in result.notes:
            print(f"\n{VARIANT_LABELS[result.variant]}: {note}.  ", end="")
    print()
    if llm is not None and llm.llm_non_embedding_params is not None:
        print(f"\n¹ Estimated: 2 × {llm.llm_non_embedding_params / 1e6:.1f}M non-embedding params × "
              f"{llm.tokens_per_state} tokens per state (the config's prompt budget max_prompt_tokens plus "
              f"the most valid actions kept × {TOKENS_PER_CANDIDATE} candidate tokens; an upper bound, real prompts are often "
              "shorter) × states/s, over the card's dense bf16 peak (`--peak-tflops`).  ")
        print("² Training counts 6 × params × tokens per sample (forward + backward), same token estimate.  ")
    print("Fractions for the raw step rate are per column, in order. n/a: not measured in this run "
          "(no such phase, or CPU).")


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PriorZero training-loop speed, with and without the LLM prior")
    parser.add_argument("--game", default="default", help="'default' (our game), a story path or a name in "
                                                          "../shared/jericho-games")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--iterations", type=int, default=12, help="measured iterations per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="iterations run before measuring (not counted)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--debug", dest="full", action="store_false", help="debug size preset (default)")
    size.add_argument("--full", dest="full", action="store_true", help="full size preset")
    parser.set_defaults(full=False)
    parser.add_argument("--llm-path", default=None, help="local HF model dir (default: the tiny default LLM)")
    parser.add_argument("--llm-shape", default=None, choices=["qwen2.5-0.5b", "qwen2.5-1.5b"],
                        help="random-initialised LLM of this shape with the tiny tokenizer (built once in $TMPDIR)")
    parser.add_argument("--config-override", action="append", default=None,
                        help="JSON dict merged (strictly) into main_config, as the entry's --config-override; "
                             "repeatable, later ones win")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants to run: llm (with the LLM prior), wm (world-model only)")
    parser.add_argument("--quick", action="store_true", help="4 measured iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="card's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--raw-steps", type=int, default=1000, help="env steps for the raw step rate")
    parser.add_argument("--_variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations = 4
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first iteration loads the models and fills the buffer)")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variant_list or any(v not in VARIANTS for v in args.variant_list):
        parser.error(f"--variants: a comma-separated subset of {','.join(VARIANTS)}, got {args.variants!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.forwarded = _strip_private(argv)
    args.command = "python bench/speed.py " + " ".join(argv)
    args.game = resolve_game(args.game)
    args.device = resolve_device(args.device)
    if args.llm_shape is not None:
        if args.llm_path is not None:
            raise SystemExit("--llm-shape and --llm-path exclude each other")
        args.llm_path = ensure_shaped_llm(args.llm_shape)
    warnings.simplefilter("ignore")
    if args._variant is not None:  # child process: one variant, result as JSON
        result = run_variant(args, args._variant)
        Path(args._out).write_text(json.dumps(asdict(result)))
        return
    results = {variant: run_variant_subprocess(args, variant) for variant in args.variant_list}
    from zoo.jericho.priorzero.priorzero_config import get_priorzero_config

    cfg, _ = get_priorzero_config(env_id=args.game, llm_path=args.llm_path, debug=not args.full, device="cpu")
    raw = raw_step_rate(args.game, cfg.env.tokenizer_path, args.raw_steps)
    print_report(args, results, raw, device_line(args.device))


def _strip_private(argv: list[str]) -> list[str]:
    """The user's arguments without --device (passed resolved) and the internal --_variant/--_out pairs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--device", "--_variant", "--_out"):
            skip = True
            continue
        if arg.startswith(("--device=", "--_variant=", "--_out=")):
            continue
        kept.append(arg)
    return kept


if __name__ == "__main__":
    main()
