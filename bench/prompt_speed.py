"""Host-side cost of scoring a state: building its prompt (with the token count that truncation needs) and tokenising
prompt and candidates for the scorer, per state, on walkthrough states of real games.

Why: on a GPU the model forward of a small prior takes a few milliseconds per state, so what the host does before it
(all in Python and the tokenizer) bounds the prior's states/s. Run from the repository root::

    python bench/prompt_speed.py                              # the tiny default LLM's tokenizer, detective + zork1
    python bench/prompt_speed.py --llm-path smollm2-135m      # a named or local model's tokenizer

"one at a time" is ``PromptBuilder.build`` per state (a tokenizer call per prompt) followed by tokenising prompts and
candidates for the scorer; "batched" is ``build_batch`` over the states of one scoring call (``--batch``), whose token
counts are the prompt ids the scorer then reuses (``PromptBuilder.token_ids``): the path the prior and trainer take.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

from lzero_ext.llm.loading import load_tokenizer, resolve_model_path
from lzero_ext.llm.prompt import PromptBuilder, PromptTooLongError
from lzero_ext.llm.scoring import tokenize_for_scoring
from zoo.jericho.priorzero.walkthrough_states import load_walkthrough_states


def _ms_per_state(fn, states: list, repeats: int) -> float:
    """Median over ``repeats`` of fn(states)'s wall time, in ms per state."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(states)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / len(states)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-path", default=None, help="tokenizer of this model (default: the tiny default LLM)")
    parser.add_argument("--games", nargs="+", default=["detective", "zork1"])
    parser.add_argument("--max-states", type=int, default=60, help="walkthrough states per game")
    parser.add_argument("--states-cache", default=None, help="walkthrough-state cache (default: the project's)")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048)
    parser.add_argument("--history-turns", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="states per scoring call")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(resolve_model_path(args.llm_path))
    builder = PromptBuilder(tokenizer, args.max_prompt_tokens, args.history_turns)
    states = []
    for game in args.games:
        for state in load_walkthrough_states(game, args.max_states, args.states_cache):
            try:
                builder.build(state.history, state.observation, state.candidates)
            except PromptTooLongError:
                continue
            states.append((state.history, state.observation, state.candidates))
    batches = [states[i:i + args.batch] for i in range(0, len(states), args.batch)]
    prompts = [builder.build_batch(batch) for batch in batches]

    def one_at_a_time(_):
        for batch in batches:
            [builder.build(*state) for state in batch]

    def batched(_):
        for batch in batches:
            builder.build_batch(batch)

    def tokenize(_):
        for batch, batch_prompts in zip(batches, prompts):
            tokenize_for_scoring(tokenizer, batch_prompts, [list(state[2]) for state in batch])

    def batched_then_reuse(_):
        for batch in batches:
            batch_prompts = builder.build_batch(batch)
            tokenize_for_scoring(tokenizer, batch_prompts, [list(state[2]) for state in batch],
                                 prompt_ids=builder.token_ids(batch_prompts))

    rows = [("build, one at a time", _ms_per_state(one_at_a_time, states, args.repeats)),
            ("build, batched", _ms_per_state(batched, states, args.repeats)),
            ("tokenize prompts + candidates for the scorer", _ms_per_state(tokenize, states, args.repeats)),
            ("build batched + candidates only (prompt ids reused)",
             _ms_per_state(batched_then_reuse, states, args.repeats))]
    mean_tokens = statistics.mean(len(ids) for batch in prompts for ids in tokenizer(batch)["input_ids"])
    print(f"Command: `{' '.join(['python bench/prompt_speed.py', *(sys.argv[1:] if argv is None else argv)])}`  ")
    print(f"Machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; tokenizer "
          f"{args.llm_path or 'tiny default'}; {len(states)} states of {', '.join(args.games)}, {args.batch} per "
          f"call, prompts of {mean_tokens:.0f} tokens on average (budget {args.max_prompt_tokens})\n")
    print("| host step | ms per state (median of runs) |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")
    print(f"| **before the forward: one at a time + tokenize / batched with reuse** | {rows[0][1] + rows[2][1]:.2f} / "
          f"{rows[3][1]:.2f} |")


if __name__ == "__main__":
    main()
