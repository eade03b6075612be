"""Prior quality on walkthrough states: how highly the LLM prior ranks the walkthrough's move among the valid actions.

The prior alone, no search: each state of a game's walkthrough (zoo/jericho/priorzero/walkthrough_states.py: the
history, the observation, the env's valid actions as the prior sees them, and which of them are "gold", i.e. reach
the walkthrough's world state) is scored by the project's own :class:`~lzero_ext.llm.prior.TransformersPrior`, so the
numbers measure exactly what the agent uses. Per game and overall (states pooled):

* top-1: P(the best-scored candidate is gold), ties split (a 3-way tie with one gold counts 1/3);
* MRR: the reciprocal rank of the best-ranked gold candidate, its expectation over random tie-breaking;
* gold mass: the prior's probability on the gold set (its softmax over the candidates);

each with a bootstrap 95% interval over states, against three priors without a model: uniform, "fewest tokens"
(score = minus the candidate's token count under the LLM's tokenizer, EOS included as the prior scores it) and
"fewest words" (minus its word count); their gold mass is the softmax of those scores. Summed log-probs rank mostly
by length, so a model is only useful where it beats "fewest tokens". states/s is the model's scoring speed (all
prompts of a game, micro-batched as the agent does; 'pmi' includes the content-free prompt of every new action list).

Defaults finish in a few minutes on a 2-core CPU (tiny default LM, three eval games, 40 states each, 512-token
prompts with one history turn); ``--gpu`` switches to the full preset's prompts (2,048 tokens, 4 turns) on CUDA::

    python bench/prior_quality.py                                   # tiny LM, rules sum/mean/pmi
    python bench/prior_quality.py --llm-path smollm2-135m --score-rule sum pmi --csv docs/results/prior.csv
    python bench/prior_quality.py --gpu --llm-path smollm2-135m --games eval --max-states 60 --json out.json
    python bench/prior_quality.py --llm-path smollm2-135m --adapter runs/lora  # LoRA merged on load

Walkthrough states need the Jericho suite ($PRIORZERO_JERICHO_GAMES, default ../shared/jericho-games) and are
built once per game (about a second per state) into the walkthrough-state cache.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common import device_line, machine_name

METRICS = ("top1", "mrr", "gold_mass")
BASELINES = ("uniform", "fewest tokens", "fewest words")
DEFAULT_GAMES = ("detective", "zork1", "905")  # eval-split games (game_splits.EVAL_GAMES)
CPU_PROMPT = dict(max_prompt_tokens=512, history_turns=1)
GPU_PROMPT = dict(max_prompt_tokens=2048, history_turns=4)  # the full preset's (priorzero_config._FULL)


# ---------------------------------------------------------------- metrics (one state: scores over K candidates)
def top1(scores: np.ndarray, gold: Sequence[int]) -> float:
    """P(best-scored candidate is gold) with ties broken uniformly at random."""
    best = np.flatnonzero(scores == scores.max())
    return float(np.isin(best, list(gold)).sum() / len(best))


def reciprocal_rank(scores: np.ndarray, gold: Sequence[int]) -> float:
    """Expected 1 / rank of the best-ranked gold candidate, ties broken uniformly at random."""
    is_gold = np.zeros(len(scores), dtype=bool)
    is_gold[list(gold)] = True
    best_gold = scores[is_gold].max()
    above = int((scores[~is_gold] > best_gold).sum())
    tied_other = int((scores[~is_gold] == best_gold).sum())
    tied_gold = int((scores[is_gold] == best_gold).sum())
    # In a random order of the tied block, the first gold sits at position j with probability
    # C(tied_other + tied_gold - j, tied_gold - 1) / C(tied_other + tied_gold, tied_gold).
    total = math.comb(tied_other + tied_gold, tied_gold)
    return sum(math.comb(tied_other + tied_gold - j, tied_gold - 1) / total / (above + j)
               for j in range(1, tied_other + 2))


def gold_mass(logprobs: np.ndarray, gold: Sequence[int]) -> float:
    """Probability the (normalised) prior puts on the gold set."""
    return float(np.exp(logprobs[list(gold)]).sum())


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.asarray(scores, dtype=np.float64) - np.max(scores)
    return shifted - np.log(np.exp(shifted).sum())


def state_metrics(logprobs: np.ndarray, gold: Sequence[int]) -> dict[str, float]:
    """All metrics of one state from the prior's normalised log-probs (or any scores, normalised here)."""
    logprobs = log_softmax(logprobs)
    return dict(top1=top1(logprobs, gold), mrr=reciprocal_rank(logprobs, gold), gold_mass=gold_mass(logprobs, gold))


def bootstrap_ci(values: Sequence[float], resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of the mean, resampling states with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or resamples <= 0:
        return float(values.mean()), float(values.mean())
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------- scoring
@dataclass
class Row:
    """One (game, prior) line of the table; ``game`` 'all' pools the states of every game."""

    game: str
    prior: str
    states: int
    top1: float
    top1_low: float
    top1_high: float
    mrr: float
    mrr_low: float
    mrr_high: float
    gold_mass: float
    gold_mass_low: float
    gold_mass_high: float
    states_per_s: float | None


def baseline_scores(candidates: Sequence[str], count_tokens: Callable[[str], int]) -> dict[str, np.ndarray]:
    return {
        "uniform": np.zeros(len(candidates)),
        "fewest tokens": -np.array([count_tokens(c) for c in candidates], dtype=np.float64),
        "fewest words": -np.array([len(c.split()) for c in candidates], dtype=np.float64),
    }


def summarise(game: str, prior: str, per_state: list[dict[str, float]], states_per_s: float | None,
              resamples: int, rng: np.random.Generator) -> Row:
    fields: dict = dict(game=game, prior=prior, states=len(per_state), states_per_s=states_per_s)
    for metric in METRICS:
        values = [m[metric] for m in per_state]
        fields[metric] = float(np.mean(values))
        fields[f"{metric}_low"], fields[f"{metric}_high"] = bootstrap_ci(values, resamples, rng)
    return Row(**fields)


def build_priors(args: argparse.Namespace, rules: Sequence[str]) -> dict:
    """One TransformersPrior per scoring rule, all sharing one loaded model (the first loads it)."""
    from lzero_ext.llm.prior import TransformersPrior

    model_path = args.llm_path
    if args.adapter:
        from lzero_ext.llm.loading import resolve_model_path
        from lzero_ext.llm.presets import merge_lora_adapter

        model_path = str(merge_lora_adapter(resolve_model_path(args.llm_path), args.adapter))
    priors, shared = {}, {}
    for rule in rules:
        cfg = dict(model_path=model_path, device=args.device, dtype=args.dtype, score_rule=rule,
                   max_prompt_tokens=args.max_prompt_tokens, history_turns=args.history_turns,
                   micro_batch_states=args.micro_batch_states, cache_size=0)
        prior = TransformersPrior(cfg, **shared)
        shared = dict(model=prior.model, tokenizer=prior.tokenizer)
        priors[rule] = prior
    return priors


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    from lzero_ext.llm.prompt import PromptTooLongError
    from lzero_ext.llm.types import PriorRequest
    from zoo.jericho.priorzero.game_splits import resolve_games
    from zoo.jericho.priorzero.walkthrough_states import load_walkthrough_states

    priors = build_priors(args, args.score_rule)
    first = next(iter(priors.values()))
    tokenizer, builder = first.tokenizer, first.prompt_builder
    eos = 1 if first.cfg.append_eos else 0

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + eos

    rng = np.random.default_rng(args.seed)
    pooled: dict[str, list[dict[str, float]]] = {}
    timing = {rule: [0, 0.0] for rule in priors}  # states, seconds
    rows: list[Row] = []
    skipped: dict[str, int] = {}
    for game in resolve_games(args.games):
        states = load_walkthrough_states(game, args.max_states, args.states_cache)
        usable = []
        for state in states:
            try:
                builder.build(list(state.history), state.observation, list(state.candidates))
            except PromptTooLongError:
                continue
            usable.append(state)
        skipped[game] = len(states) - len(usable)
        if not usable:
            print(f"{game}: no state fits in {args.max_prompt_tokens} prompt tokens; skipped", file=sys.stderr)
            continue
        requests = [PriorRequest(list(s.history), s.observation, list(s.candidates)) for s in usable]
        per_prior: dict[str, list[dict[str, float]]] = {}
        speed: dict[str, float | None] = {}
        for rule, prior in priors.items():
            start, results = time.perf_counter(), []
            for i in range(0, len(requests), args.micro_batch_states):
                results += prior.score(requests[i:i + args.micro_batch_states])
            seconds = time.perf_counter() - start
            timing[rule][0] += len(requests)
            timing[rule][1] += seconds
            name = f"LLM {rule}"
            per_prior[name] = [state_metrics(r.logprobs, s.gold) for r, s in zip(results, usable)]
            speed[name] = len(requests) / seconds
        for baseline in BASELINES:
            per_prior[baseline] = [state_metrics(baseline_scores(s.candidates, count_tokens)[baseline], s.gold)
                                   for s in usable]
            speed[baseline] = None
        for name, per_state in per_prior.items():
            rows.append(summarise(game, name, per_state, speed[name], args.bootstrap, rng))
            pooled.setdefault(name, []).extend(per_state)
    for name, per_state in pooled.items():
        states_per_s = None
        if name.startswith("LLM "):
            done, seconds = timing[name[4:]]
            states_per_s = done / seconds
        rows.append(summarise("all", name, per_state, states_per_s, args.bootstrap, rng))
    settings = dict(
        llm=args.llm_path or "tiny default", adapter=args.adapter, score_rules=list(args.score_rule),
        max_prompt_tokens=args.max_prompt_tokens, history_turns=args.history_turns, max_states=args.max_states,
        games=resolve_games(args.games), skipped_over_budget=skipped, device=args.device, dtype=args.dtype,
        micro_batch_states=args.micro_batch_states,
        machine=machine_name(args.device), bootstrap=args.bootstrap, seed=args.seed,
    )
    return rows, settings


def format_table(rows: list[Row]) -> str:
    def ci(row: Row, metric: str) -> str:
        return f"{getattr(row, metric):.3f} ({getattr(row, metric + '_low'):.3f}-{getattr(row, metric + '_high'):.3f})"

    lines = ["| game | prior | states | top-1 (95% CI) | MRR (95% CI) | gold mass (95% CI) | states/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        speed = f"{row.states_per_s:.1f}" if row.states_per_s is not None else ""
        lines.append(f"| {row.game} | {row.prior} | {row.states} | {ci(row, 'top1')} | {ci(row, 'mrr')} | "
                     f"{ci(row, 'gold_mass')} | {speed} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from lzero_ext.llm.scoring import SCORE_RULES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm-path", default=None,
                        help="HF model directory or preset name (e.g. smollm2-135m); default: the tiny default LM")
    parser.add_argument("--adapter", default=None, help="peft LoRA adapter directory, merged into --llm-path on load")
    parser.add_argument("--score-rule", nargs="+", choices=SCORE_RULES, default=list(SCORE_RULES),
                        help="scoring rules to compare (one prior each, one shared model)")
    parser.add_argument("--games", nargs="+", default=list(DEFAULT_GAMES),
                        help="game names or story files; 'eval'/'train' expand to game_splits' lists")
    parser.add_argument("--max-states", type=int, default=40, help="walkthrough states per game (from the start)")
    parser.add_argument("--max-prompt-tokens", type=int, default=None,
                        help=f"prompt budget (default {CPU_PROMPT['max_prompt_tokens']}, "
                             f"--gpu {GPU_PROMPT['max_prompt_tokens']})")
    parser.add_argument("--history-turns", type=int, default=None,
                        help=f"history turns (default {CPU_PROMPT['history_turns']}, --gpu {GPU_PROMPT['history_turns']})")
    parser.add_argument("--gpu", action="store_true", help="full prompts (2,048 tokens, 4 turns) on --device cuda")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda[:i] (default with --gpu)")
    parser.add_argument("--dtype", default="auto", help="weights dtype: auto (bf16 on GPU, fp32 on CPU), float32, ...")
    parser.add_argument("--micro-batch-states", type=int, default=None,
                        help="states per prior call (default 8; 32 with --gpu, the prior's own default in the loop)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--states-cache", default=None, help="walkthrough-state cache folder (default: the project's)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--csv", default=None, help="write the rows as CSV (with the settings in every row)")
    parser.add_argument("--json", default=None, help="write settings and rows as JSON")
    args = parser.parse_args(argv)
    preset = GPU_PROMPT if args.gpu else CPU_PROMPT
    args.max_prompt_tokens = args.max_prompt_tokens or preset["max_prompt_tokens"]
    args.history_turns = preset["history_turns"] if args.history_turns is None else args.history_turns
    args.device = args.device or ("cuda" if args.gpu else "cpu")
    args.micro_batch_states = args.micro_batch_states or (32 if args.gpu else 8)
    if args.adapter and not Path(args.adapter).is_dir():
        parser.error(f"--adapter {args.adapter!r} is not a directory")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows, settings = run(args)
    settings["seconds"] = round(time.perf_counter() - start, 1)
    print(f"Prior quality: LLM {settings['llm']}{' + adapter ' + args.adapter if args.adapter else ''}, prompts of "
          f"{args.max_prompt_tokens} tokens with {args.history_turns} history turn(s), up to {args.max_states} "
          f"walkthrough states per game; {device_line(args.device)}; {settings['seconds']:.0f} s")
    skipped = {g: n for g, n in settings["skipped_over_budget"].items() if n}
    if skipped:
        print(f"States skipped, prompt over budget even without history: {skipped}")
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            context = {k: v for k, v in settings.items() if not isinstance(v, (list, dict))}
            writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])) + list(context))
            writer.writeheader()
            for row in rows:
                writer.writerow({**asdict(row), **context})
    if args.json:
        Path(args.json).write_text(json.dumps(dict(settings=settings, rows=[asdict(r) for r in rows]), indent=1))
    return rows


if __name__ == "__main__":
    main()
