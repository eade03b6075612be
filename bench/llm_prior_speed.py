"""LLM prior speed: shared-prefix vs naive candidate scoring, and LLM trainer throughput.

CPU (default): the tiny default model, scoring and ``LLMTrainer.train_step`` samples/s.
GPU: ``--device cuda --shape qwen2.5-0.5b qwen2.5-1.5b smollm2-135m``: random-initialised bf16 models with those
shapes (``smollm2-135m``: the llama shape of the shipped prior, to see how many states per call it needs), prompts
of 512 and 1024 tokens, 20 candidates of 3-8 tokens, 8 and 32 states per batch; reports achieved TFLOP/s against the
card's dense bf16 peak. The GPU path imports only torch/transformers/numpy and ``lzero_ext.llm.scoring`` (no
DI-engine, lightzero or easydict), so it runs where only those are installed:

    PYTHONPATH=. python bench/llm_prior_speed.py --device cuda --shape qwen2.5-0.5b qwen2.5-1.5b

Targets (H100, bf16, 20 candidates, 32 states per batch, 1024 prompt tokens): shared-prefix >= 12x naive;
>= 400 states/s for the 0.5B shape and >= 140 for the 1.5B shape.

Measured 2026-11-25 on one H100 80GB HBM3 (torch 2.11, transformers 5.17), 32 states x 1024 tokens, 20 candidates
(`--shape qwen2.5-0.5b qwen2.5-1.5b --prompt-tokens 1024 --states 32 --modes lean --fused --compile`):

| scorer | 0.5B states/s | TFLOP/s (% of 989) | 1.5B states/s | TFLOP/s (%) |
|---|---|---|---|---|
| lean | 292 | 262 (26%) | 118 | 369 (37%) |
| lean + fused norms/MLP | 355 | 316 (32%) | 138 | 432 (44%) |
| lean + compiled layers (the prior's default on CUDA) | **441** | 393 (40%) | **160** | 501 (51%) |

Both targets (400 and 140 states/s) are met by the compiled scorer; compiled vs eager bf16 scores differ by at most
0.08 (0.5B) / 0.16 (1.5B) nats on summed scores of about 100 nats (bf16 rounding). Naive scoring (earlier run, same
card): 13.9 and 6.2 states/s, so shared-prefix is 24-26x faster. At 8 states per batch the two-pass scorers are
bound by the host CPU (kernel launches), where the one-pass ``packed`` mode is faster.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import transformers

from lzero_ext.llm.fused_ops import fuse_norms_and_mlp
from lzero_ext.llm.scoring import naive_score_candidate_ids, score_candidate_ids

SHAPES = {
    # Qwen2.5 configs (public model cards); weights are random, only the shapes matter for speed.
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    # SmolLM2-135M (llama; the config of the smollm2-135m preset): the prior the project ships, narrow and deep.
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=1e5),
}
LLAMA_SHAPES = {"smollm2-135m"}  # the rest are Qwen2


def shape_config(shape: str, **changes) -> "transformers.PretrainedConfig":
    """The shape's config (its architecture's class), sdpa attention, with ``changes`` applied."""
    config_class = transformers.LlamaConfig if shape in LLAMA_SHAPES else transformers.Qwen2Config
    config = config_class(**{"max_position_embeddings": 4096, "rope_theta": 1e6, **SHAPES[shape], **changes})
    config._attn_implementation = "sdpa"
    return config


def shape_model(config) -> torch.nn.Module:
    """A random-initialised causal LM of ``config``'s architecture."""
    return transformers.AutoModelForCausalLM.from_config(config)


BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM


@dataclass
class Row:
    device: str
    shape: str
    prompt_tokens: int
    states: int
    method: str
    states_per_s: float
    candidates_per_s: float
    tflops: float
    speedup_vs_naive: float | None = None


def build_random_model(shape: str, device: torch.device) -> torch.nn.Module:
    config = shape_config(shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = shape_model(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def make_batch(rng: np.random.Generator, vocab: int, states: int, prompt_tokens: int, candidates: int,
               spread: float = 0.0):
    """Random token ids: prompts of ``prompt_tokens`` tokens, or with ``spread`` uniformly between
    ``(1 - spread) * prompt_tokens`` and ``prompt_tokens`` (real prompts differ in length, which padding pays for)."""
    lengths = rng.integers(int(round((1 - spread) * prompt_tokens)), prompt_tokens + 1, states)
    prompts = [rng.integers(0, vocab, length).tolist() for length in lengths]
    cands = [[rng.integers(0, vocab, int(rng.integers(3, 9))).tolist() for _ in range(candidates)]
             for _ in range(states)]
    return prompts, cands


def non_embedding_params(model: torch.nn.Module) -> int:
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding)


def scoring_flops(model, prompts, cands, naive: bool) -> float:
    """Matmul FLOPs of the work each method does: 2*N per token, causal attention, and logits rows."""
    config = model.config
    n_params = non_embedding_params(model) - (0 if config.tie_word_embeddings else model.lm_head.weight.numel())
    attention_width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    vocab_flops_per_row = 2 * config.hidden_size * config.vocab_size
    total = 0.0
    for prompt, state_cands in zip(prompts, cands):
        p = len(prompt)
        if naive:
            for cand in state_cands:
                length = p + len(cand)
                total += 2 * n_params * length + 2 * config.num_hidden_layers * attention_width * length * length
                total += vocab_flops_per_row * len(cand)
        else:
            q = sum(len(c) for c in state_cands)
            total += 2 * n_params * (p + q) + 2 * config.num_hidden_layers * attention_width * p * p
            total += 4 * config.num_hidden_layers * attention_width * q * (p + 8)
            total += vocab_flops_per_row * (1 + q - len(state_cands))
    return total


def time_call(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` after warm-up (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_scoring(model, shape: str, device: torch.device, args, rng, suffix: str = "", naive: bool = True,
                  compiled: bool = False) -> list[Row]:
    rows = []
    for prompt_tokens in args.prompt_tokens:
        for states in args.states:
            prompts, cands = make_batch(rng, model.config.vocab_size, states, prompt_tokens, args.candidates,
                                        args.prompt_spread)
            n_cands = states * args.candidates
            methods = {
                mode: lambda mode=mode: score_candidate_ids(model, prompts, cands, mode=mode, compiled=compiled)
                for mode in (["lean"] if compiled else args.modes)
            }
            if "lean" in methods and device.type == "cuda":  # the opt-in packed prefill beside the padded one
                methods["lean/packed"] = lambda: score_candidate_ids(model, prompts, cands, mode="lean",
                                                                     compiled=compiled, packed_prefill=True)
            if naive and not args.no_naive:
                methods["naive"] = lambda: naive_score_candidate_ids(
                    model, prompts, cands, max_sequences_per_forward=args.naive_chunk
                )
            timings = {}
            with torch.inference_mode():
                for method, fn in methods.items():
                    repeats = args.naive_repeats if method == "naive" else args.repeats
                    timings[method] = time_call(fn, device, 1, repeats)
            for method, seconds in timings.items():
                flops = scoring_flops(model, prompts, cands, naive=method == "naive")
                baseline = timings.get("naive") or naive_seconds.get((prompt_tokens, states))
                speedup = baseline / seconds if baseline and method != "naive" else None
                if method == "naive":
                    naive_seconds[(prompt_tokens, states)] = seconds
                rows.append(Row(str(device), shape, prompt_tokens, states, method + suffix, states / seconds,
                                n_cands / seconds, flops / seconds / 1e12, speedup))
                print(f"progress: {rows[-1]}", file=sys.stderr, flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


naive_seconds: dict[tuple[int, int], float] = {}  # per (prompt tokens, states) of the current shape


def bench_training_gpu(model, shape: str, device: torch.device, args, rng, suffix: str = "") -> list[Row]:
    """Forward + backward of the shared-prefix scorer (the trainer's dominant cost), bf16, no optimiser."""
    rows = []
    model.requires_grad_(True)
    for prompt_tokens in args.prompt_tokens[:1]:
        states = min(args.states)
        prompts, cands = make_batch(rng, model.config.vocab_size, states, prompt_tokens, args.candidates)

        def step():
            scores = score_candidate_ids(model, prompts, cands, mode=args.modes[0])
            torch.stack([torch.log_softmax(s, 0)[0] for s in scores]).sum().backward()
            model.zero_grad(set_to_none=True)

        seconds = time_call(step, device, 1, args.repeats)
        flops = 3 * scoring_flops(model, prompts, cands, naive=False)
        rows.append(Row(str(device), shape, prompt_tokens, states, f"train fwd+bwd ({args.modes[0]})" + suffix, states / seconds,
                        states * args.candidates / seconds, flops / seconds / 1e12))
    model.requires_grad_(False)
    return rows


def bench_trainer_cpu(args) -> list[Row]:
    """Samples/s of the real ``LLMTrainer.train_step`` on the tiny default model (needs easydict)."""
    from lzero_ext.llm.default_model import CORPUS_PATH
    from lzero_ext.llm.trainer import LLMTrainer
    from lzero_ext.llm.types import LLMSample, Turn

    trainer = LLMTrainer(dict(device="cpu", micro_batch_size=8, max_prompt_tokens=512, kl_coef=0.01))
    lines = [line for line in CORPUS_PATH.read_text().splitlines() if len(line) > 40]
    rng = np.random.default_rng(0)
    samples = []
    for index in range(args.trainer_samples):
        observation = " ".join(rng.choice(lines, 3))
        candidates = [" ".join(rng.choice(["take", "open", "go", "north", "lamp", "door", "key"], int(rng.integers(1, 4))))
                      + f" {k}" for k in range(args.candidates)]
        visits = rng.dirichlet(np.ones(args.candidates)).astype(np.float32)
        samples.append(LLMSample([Turn(str(rng.choice(lines)), "look", 0.0)], observation, candidates, visits,
                                 int(visits.argmax()), float(rng.normal()), -3.0, group_id=index))
    seconds = time_call(lambda: trainer.train_step(samples), torch.device("cpu"), 1, max(1, args.repeats // 2))
    n = len(samples)
    return [Row("cpu", "tiny", -1, n, "LLMTrainer.train_step", n / seconds, n * args.candidates / seconds, float("nan"))]


def agreement_check(shape: str, device: torch.device, rng) -> str:
    """fp32 max |shared - naive| of summed log-probs on a 2-layer model with the shape's widths."""
    config = shape_config(shape, num_hidden_layers=2)
    with torch.device(device):
        model = shape_model(config).eval()
    prompts, cands = make_batch(rng, config.vocab_size, 4, 512, 20)
    with torch.inference_mode():
        naive = naive_score_candidate_ids(model, prompts, cands)
        diffs = []
        for mode in ("lean", "prefix_cache", "packed"):
            shared = score_candidate_ids(model, prompts, cands, mode=mode)
            diffs.append(f"{mode} {max((a - b).abs().max().item() for a, b in zip(shared, naive)):.2e}")
    return f"fp32 agreement with naive ({shape} widths, 2 layers, 4 x 512 tokens): " + ", ".join(diffs)


def compiled_agreement(model, shape: str, device: torch.device, rng) -> str:
    """bf16 max |fast - plain| lean scores (same model): compiled layers with the packed prefill against eager layers
    with the padded one, on prompts of 256-512 tokens, so a faster path cannot be a wrong one."""
    prompts, cands = make_batch(rng, model.config.vocab_size, 8, 512, 20, spread=0.5)
    with torch.inference_mode():
        plain = score_candidate_ids(model, prompts, cands, mode="lean")
        fast = score_candidate_ids(model, prompts, cands, mode="lean", compiled=True, packed_prefill=True)
    diff = max((a - b).abs().max().item() for a, b in zip(fast, plain))
    scale = max(a.abs().max().item() for a in plain)
    return (f"compiled + packed vs eager + padded lean scores ({shape}, bf16, 8 prompts of 256-512 tokens): "
            f"max abs diff {diff:.3g} (scores up to {scale:.3g})")


def print_table(rows: list[Row], args, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = next((value for key, value in BF16_PEAK_TFLOPS.items() if key in name), None)
    print(f"Command: `{' '.join(sys.argv)}`  ")
    print(f"Device: {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}; bf16 peak {peak or 'n/a'} TFLOP/s  ")
    lengths = "" if not args.prompt_spread else f"; prompts of {1 - args.prompt_spread:g}-1 x the prompt tokens"
    print(f"{args.candidates} candidates of 3-8 tokens per state{lengths}; median of {args.repeats} runs after "
          f"warm-up; lean/packed: the opt-in packed prefill\n")
    print("| shape | prompt tokens | states/batch | method | states/s | candidates/s | TFLOP/s | % of bf16 peak | x naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        share = f"{100 * row.tflops / peak:.1f}" if peak and row.tflops == row.tflops else "-"
        speedup = f"{row.speedup_vs_naive:.1f}" if row.speedup_vs_naive else "-"
        tokens = row.prompt_tokens if row.prompt_tokens > 0 else "text"
        tflops = f"{row.tflops:.3g}" if row.tflops == row.tflops else "-"
        print(f"| {row.shape} | {tokens} | {row.states} | {row.method} | {row.states_per_s:.1f} | "
              f"{row.candidates_per_s:.0f} | {tflops} | {share} | {speedup} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shape", nargs="+", default=None, help=f"model shapes on GPU: {sorted(SHAPES)}; CPU: tiny")
    parser.add_argument("--prompt-tokens", nargs="+", type=int, default=None)
    parser.add_argument("--states", nargs="+", type=int, default=None, help="states per batch")
    parser.add_argument("--prompt-spread", type=float, default=0.0,
                        help="prompt lengths uniform in [(1 - SPREAD) * P, P] instead of all P tokens")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["lean", "prefix_cache", "packed"], help="shared-prefix layouts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=3)
    parser.add_argument("--naive-chunk", type=int, default=64, help="sequences per forward in naive scoring")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--no-trainer", action="store_true")
    parser.add_argument("--trainer-samples", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--fused", action="store_true", help="also time with lzero_ext.llm.fused_ops (RMSNorm, SwiGLU)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the lean scorer with torch.compile'd layers (after --fused if given)")
    parser.add_argument("--no-check", action="store_true", help="skip the fp32 shared-vs-naive agreement check")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if not 0 <= args.prompt_spread < 1:
        parser.error(f"--prompt-spread must be in [0, 1), got {args.prompt_spread}")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    args.shape = args.shape or (["qwen2.5-0.5b", "qwen2.5-1.5b"] if on_gpu else ["tiny"])
    args.prompt_tokens = args.prompt_tokens or ([512, 1024] if on_gpu else [256] if args.quick else [256, 512])
    args.states = args.states or ([8, 32] if on_gpu else [8])
    if args.quick:
        args.repeats, args.naive_repeats = min(args.repeats, 2), min(args.naive_repeats, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    notes = []
    if on_gpu and not args.no_check:
        notes.append(agreement_check(args.shape[0], device, rng))
        torch.cuda.empty_cache()
    rows: list[Row] = []
    for shape in args.shape:
        if shape == "tiny":
            from lzero_ext.llm.default_model import ensure_default_model

            model = transformers.AutoModelForCausalLM.from_pretrained(ensure_default_model(), attn_implementation="sdpa")
            model = model.to(device).eval()
        else:
            model = build_random_model(shape, device)
        naive_seconds.clear()
        rows += bench_scoring(model, shape, device, args, rng)
        if on_gpu and not args.no_trainer:
            rows += bench_training_gpu(model, shape, device, args, rng)
        if args.fused:
            fuse_norms_and_mlp(model)
            rows += bench_scoring(model, shape, device, args, rng, suffix="+fused", naive=False)
            if on_gpu and not args.no_trainer:
                rows += bench_training_gpu(model, shape, device, args, rng, suffix="+fused")
        if args.compile and on_gpu:
            notes.append(compiled_agreement(model, shape, device, rng))
            rows += bench_scoring(model, shape, device, args, rng, suffix="+compiled", naive=False, compiled=True)
        del model
        if on_gpu:
            torch.cuda.empty_cache()
    if not on_gpu and not args.no_trainer:
        rows += bench_trainer_cpu(args)
    print_table(rows, args, device)
    for note in notes:
        print(f"\n{note}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump([asdict(row) for row in rows], handle, indent=2)


if __name__ == "__main__":
    main()
