"""Score candidate actions under a causal LM, paying one prompt prefill per state instead of one per candidate.

A candidate's score follows a scoring rule (``SCORE_RULES``), all in fp32:

* ``'sum'``: the summed log-probability of its own tokens after the prompt, log p(c | prompt);
* ``'mean'``: that sum divided by the candidate's token count;
* ``'pmi'``: log p(c | prompt) - log p(c | content-free prompt), the pointwise mutual information between the
  candidate and the state. Summed and mean log-probs both rank candidates mostly by length (every token costs
  probability); subtracting what the model thinks of the candidate without the state removes that surface-form
  preference (Holtzman et al. 2021, "surface form competition"; Zhao et al. 2021, "Calibrate before use"). The
  content-free prompt of a state keeps its action list (see :meth:`PromptBuilder.content_free_prompt`), so
  :class:`ContentFreeCache` keeps the term per (action list, candidate) and weights version; it is computed without
  gradients and in eval mode (no dropout), so training shapes the conditional log-prob only.

The shared-prefix scorer encodes each prompt once and scores all of its candidates in the same batch:

* ``mode="prefix_cache"`` (default): the right-padded prompts are prefilled with plain causal attention (fast
  kernels, no mask), then all candidates of a state are packed into one continuation that reuses the prompt's
  KV cache; a block mask lets each candidate token see the real prompt tokens and the earlier tokens of its own
  candidate only, and position ids restart at the prompt length for every candidate.
* ``mode="packed"``: the same layout in one forward pass over ``prompt + packed candidates`` with a 4D block mask.
* ``mode="lean"``: the prefix-cache layout run by :mod:`lzero_ext.llm.lean_forward`, a lean re-implementation of
  the Qwen2/Llama decoder forward on the model's own modules (less Python overhead, GQA-native flash prefill).

The HF-forward modes need eager or sdpa attention (custom masks). Logits are computed only at the positions that predict candidate
tokens (the last prompt token is shared by every candidate's first token), never over the whole prompt.
``naive_score_candidates`` scores one full sequence per candidate, for tests and benchmarks.

This module imports only numpy, torch and transformers, so the GPU benchmark can use it without DI-engine or easydict.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import inspect
import itertools
import logging
from functools import lru_cache

import numpy as np
import torch
from transformers import DynamicCache

from lzero_ext.llm.lean_forward import check_lean_support, lean_continue, lean_prefill, lean_prefill_packed

logger = logging.getLogger(__name__)

SCORING_MODES = ("prefix_cache", "packed", "lean")
SCORE_RULES = ("sum", "mean", "pmi")
_LOGIT_CHUNK_ROWS = 1024
_CONTENT_FREE_CANDIDATES_PER_ROW = 64  # content-free scoring packs this many candidates after one copy of the prompt


def check_score_rule(score_rule: str, where: str = "score_rule") -> str:
    """Return ``score_rule`` if it is one of ``SCORE_RULES``; the old boolean ``length_normalize`` is refused."""
    if isinstance(score_rule, bool) or score_rule not in SCORE_RULES:
        raise ValueError(f"{where} must be one of {SCORE_RULES} ('mean' replaces length_normalize=True), "
                         f"got {score_rule!r}")
    return score_rule


ScoreFn = Callable[[Sequence[Sequence[int]], Sequence[Sequence[Sequence[int]]]], Sequence[Any]]


class ContentFreeCache:
    """log p(candidate | content-free prompt) by (content-free prompt, candidate token ids), for one weights version.

    The content-free prompt depends on the state's action list only, so a candidate is scored once per weights
    version and list, however many states show that list (in a text game: every visit to a room with the same
    exits and objects). ``sync(version)`` drops everything when the weights changed; at most ``max_entries`` are kept
    (the least recently used go first).
    """

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self.version: int | None = None
        self._terms: OrderedDict[tuple[int, tuple[int, ...]], float] = OrderedDict()
        self.scored = 0  # candidates scored under the content-free prompt since creation (for tests and benches)

    def sync(self, version: int) -> "ContentFreeCache":
        if version != self.version:
            self._terms.clear()
            self.version = version
        return self

    def clear(self) -> None:
        self._terms.clear()

    def __len__(self) -> int:
        return len(self._terms)

    def terms(self, prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]],
              score_fn: ScoreFn) -> list[np.ndarray]:
        """Per state, float64 [K] content-free log-probs (``prompt_ids``: each state's content-free prompt);
        ``score_fn(prompts, candidates)`` scores the missing ones (summed log-probs, one row per prompt copy)."""
        prompts = {hash(tuple(p)): list(p) for p in prompt_ids}
        wanted = [[(hash(tuple(p)), tuple(c)) for c in cands] for p, cands in zip(prompt_ids, candidate_ids)]
        missing: dict[int, list[tuple[int, ...]]] = {}
        for key in dict.fromkeys(k for keys in wanted for k in keys if k not in self._terms):
            missing.setdefault(key[0], []).append(key[1])
        rows = [(prompt, cands[i:i + _CONTENT_FREE_CANDIDATES_PER_ROW])
                for prompt, cands in missing.items() for i in range(0, len(cands), _CONTENT_FREE_CANDIDATES_PER_ROW)]
        if rows:
            scores = score_fn([prompts[p] for p, _ in rows], [[list(c) for c in cands] for _, cands in rows])
            for (prompt, cands), row_scores in zip(rows, scores):
                values = torch.as_tensor(row_scores).detach().double().cpu().tolist()
                self._terms.update(((prompt, c), v) for c, v in zip(cands, values))
                self.scored += len(cands)
        result = [np.array([self._terms[k] for k in keys], dtype=np.float64) for keys in wanted]
        for key in dict.fromkeys(k for keys in wanted for k in keys):
            self._terms.move_to_end(key)
        while len(self._terms) > self.max_entries:
            self._terms.popitem(last=False)
        return result


@dataclass
class _PackedLayout:
    """Token layout of one micro-batch of states (prompts right-padded, candidates packed per state)."""

    prompt_ids: torch.Tensor  # [B, P] long
    prompt_lengths: torch.Tensor  # [B] long
    continuation_ids: torch.Tensor  # [B, Q] long, all candidates of a state back to back
    continuation_block: torch.Tensor  # [B, Q] long, candidate index within the state, -1 for padding
    continuation_offset: torch.Tensor  # [B, Q] long, token index within its candidate
    first_state: torch.Tensor  # [C] state of each candidate (its first token is predicted by that prompt's end)
    first_target: torch.Tensor  # [C] first token of each candidate
    rest_row: torch.Tensor  # [N] state of a later candidate token
    rest_col: torch.Tensor  # [N] continuation position whose output predicts it
    rest_target: torch.Tensor  # [N] the predicted token
    rest_candidate: torch.Tensor  # [N] flat candidate index it belongs to
    candidate_lengths: torch.Tensor  # [C] tokens per candidate
    num_candidates: list[int]
    prompt_id_lists: Sequence[Sequence[int]]  # the prompts as given, for the packed prefill


def _packed_prompts(layout: _PackedLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The prompts' real tokens back to back: tokens, int32 offsets [B + 1], each token's prompt and position."""
    lengths = np.array([len(prompt) for prompt in layout.prompt_id_lists], dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter(itertools.chain.from_iterable(layout.prompt_id_lists), dtype=np.int64, count=int(offsets[-1]))
    token_state = np.repeat(np.arange(len(lengths)), lengths)
    token_position = np.arange(len(tokens)) - offsets[:-1][token_state]
    device = layout.prompt_ids.device
    as_tensor = [torch.from_numpy(values).to(device, non_blocking=True)
                 for values in (tokens, offsets, token_state, token_position)]
    return (*as_tensor, int(lengths.max()))


def tokenize_for_scoring(
    tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]], append_eos: bool = True,
    prompt_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Token ids of prompts (with the tokenizer's special tokens) and of each candidate on its own.

    ``prompt_ids``, when given, are the prompts' ids already (e.g. :meth:`PromptBuilder.token_ids`): not recomputed.

    Candidates are tokenised separately so their tokens do not merge with the prompt's; with ``append_eos`` each
    candidate ends with the EOS token, so a candidate that is a prefix of another does not inherit its probability.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"Got {len(prompts)} prompts but {len(candidates)} candidate lists")
    for index, state_candidates in enumerate(candidates):
        if len(state_candidates) == 0:
            raise ValueError(f"State {index} has an empty candidate list; there is nothing to score")
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("append_eos=True needs a tokenizer with an eos_token")
    if prompt_ids is None:
        prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    elif len(prompt_ids) != len(prompts):
        raise ValueError(f"Got {len(prompt_ids)} prompt id lists for {len(prompts)} prompts")
    prompt_ids = [list(ids) for ids in prompt_ids]
    flat = [text for state_candidates in candidates for text in state_candidates]
    flat_ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
    suffix = [tokenizer.eos_token_id] if append_eos else []
    candidate_ids, start = [], 0
    for state_candidates in candidates:
        candidate_ids.append([list(ids) + suffix for ids in flat_ids[start:start + len(state_candidates)]])
        start += len(state_candidates)
    return prompt_ids, candidate_ids


def resolve_scoring_mode(model, mode: str, training: bool) -> str:
    """``'auto'`` picks ``'lean'`` when the model supports it (fastest on GPU), else ``'prefix_cache'``."""
    if mode != "auto":
        if mode not in SCORING_MODES:
            raise ValueError(f"Unknown scoring mode {mode!r}; choose 'auto' or one of {SCORING_MODES}")
        return mode
    try:
        check_lean_support(model, training)
    except ValueError as reason:
        logger.info("Scoring with mode='prefix_cache': the lean forward does not fit this model (%s)", reason)
        return "prefix_cache"
    return "lean"


def scoring_autocast(model) -> contextlib.AbstractContextManager:
    """bf16 autocast when an fp32 model (a training copy the prior may share) runs on CUDA; nothing otherwise.

    One rule for the prior, the trainer and evaluation alike, so a shared model scores the same in each.
    """
    weight = model.get_input_embeddings().weight
    if weight.device.type == "cuda" and weight.dtype == torch.float32:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_vocab_compatible(model, tokenizer) -> None:
    """Raise if the tokenizer can emit ids the model has no embedding for (a tokenizer/model mismatch)."""
    num_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > num_embeddings:
        raise ValueError(
            f"Tokenizer/model mismatch: the tokenizer has {len(tokenizer)} tokens but the model embeds only "
            f"{num_embeddings}; load the tokenizer that belongs to this model"
        )


def score_candidates(
    model,
    tokenizer,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    score_rule: str = "sum",
    *,
    content_free_prompts: Sequence[str] | None = None,
    calibration: ContentFreeCache | None = None,
    append_eos: bool = True,
    mode: str = "prefix_cache",
    max_states_per_forward: int | None = None,
    compiled: bool = False,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    packed_prefill: bool = False,
) -> list[torch.Tensor]:
    """Per state, an fp32 tensor [K] of candidate scores under ``score_rule``, with gradients if grad mode is on.

    ``'pmi'`` needs each state's ``content_free_prompts`` (see :meth:`PromptBuilder.content_free_prompt`);
    ``calibration`` caches their terms across calls (the caller syncs it to the weights version). ``prompt_ids``:
    the prompts' token ids when the caller has them (see :func:`tokenize_for_scoring`).
    """
    prompt_ids, candidate_ids = tokenize_for_scoring(tokenizer, prompts, candidates, append_eos, prompt_ids)
    return score_candidate_ids(
        model, prompt_ids, candidate_ids, score_rule,
        content_free_ids=content_free_prompt_ids(tokenizer, content_free_prompts), calibration=calibration, mode=mode,
        max_states_per_forward=max_states_per_forward, compiled=compiled, packed_prefill=packed_prefill,
    )


def content_free_prompt_ids(tokenizer, content_free_prompts: Sequence[str] | None) -> list[list[int]] | None:
    """Token ids of the content-free prompts, tokenised as the scoring prompts are."""
    if content_free_prompts is None:
        return None
    return [list(ids) for ids in tokenizer(list(content_free_prompts), add_special_tokens=True)["input_ids"]]


def _require_content_free(score_rule: str, content_free_ids: Sequence[Sequence[int]] | None, states: int) -> None:
    check_score_rule(score_rule)
    if score_rule == "pmi" and (content_free_ids is None or len(content_free_ids) != states):
        raise ValueError("score_rule='pmi' needs one content-free prompt per state (content_free_prompts / "
                         "content_free_ids)")


def score_candidate_ids(
    model,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    score_rule: str = "sum",
    *,
    content_free_ids: Sequence[Sequence[int]] | None = None,
    calibration: ContentFreeCache | None = None,
    mode: str = "prefix_cache",
    max_states_per_forward: int | None = None,
    compiled: bool = False,
    packed_prefill: bool = False,
) -> list[torch.Tensor]:
    """Token-id version of :func:`score_candidates`; states are sorted by length and micro-batched.

    ``compiled`` (lean mode on CUDA only) runs the decoder layers through ``torch.compile``. ``packed_prefill``
    (lean mode) prefills the prompts' real tokens back to back instead of padded (see :mod:`lean_forward`).
    """
    _require_content_free(score_rule, content_free_ids, len(prompt_ids))
    results = _score_ids(model, prompt_ids, candidate_ids, "mean" if score_rule == "mean" else "sum", mode,
                         max_states_per_forward, compiled, packed_prefill)
    if score_rule != "pmi":
        return results

    def score_fn(prompts, cands):
        return _score_ids(model, prompts, cands, "sum", mode, max_states_per_forward, compiled, packed_prefill)

    terms = _content_free_terms(model, content_free_ids, candidate_ids, calibration, score_fn)
    return [scores - torch.as_tensor(term, dtype=scores.dtype, device=scores.device)
            for scores, term in zip(results, terms)]


def _content_free_terms(model, content_free_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]],
                        calibration: ContentFreeCache | None, score_fn: ScoreFn) -> list[np.ndarray]:
    """The calibration term of every candidate: no gradient, eval mode (no dropout), through ``calibration``."""
    cache = calibration if calibration is not None else ContentFreeCache()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return cache.terms(content_free_ids, candidate_ids, score_fn)
    finally:
        model.train(was_training)


def _score_ids(model, prompt_ids, candidate_ids, score_rule: str, mode: str, max_states_per_forward: int | None,
               compiled: bool, packed_prefill: bool = False) -> list[torch.Tensor]:
    """Shared-prefix scores under 'sum' or 'mean'."""
    if mode not in SCORING_MODES:
        raise ValueError(f"Unknown scoring mode {mode!r}; choose one of {SCORING_MODES}")
    if packed_prefill and mode != "lean":
        raise ValueError(f"packed_prefill needs the lean scorer (mode='lean'), got mode={mode!r}")
    _check_inputs(model, prompt_ids, candidate_ids)
    if mode == "lean":
        check_lean_support(model)
    else:
        _check_attention_supports_masks(model)
    sizes = [len(p) + sum(len(c) for c in cands) for p, cands in zip(prompt_ids, candidate_ids)]
    order = sorted(range(len(prompt_ids)), key=lambda index: -sizes[index])
    step = max_states_per_forward or len(order) or 1
    results: list[torch.Tensor | None] = [None] * len(prompt_ids)
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        layout = _build_layout([prompt_ids[i] for i in chunk], [candidate_ids[i] for i in chunk], _device_of(model))
        scores = _score_layout(model, layout, score_rule == "mean", mode, compiled, packed_prefill)
        for index, state_scores in zip(chunk, scores):
            results[index] = state_scores
    return results  # type: ignore[return-value]


def naive_score_candidates(
    model,
    tokenizer,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    score_rule: str = "sum",
    *,
    content_free_prompts: Sequence[str] | None = None,
    append_eos: bool = True,
    max_sequences_per_forward: int = 64,
) -> list[torch.Tensor]:
    """Reference scorer: one full ``prompt + candidate`` sequence per candidate (K prefills per state)."""
    prompt_ids, candidate_ids = tokenize_for_scoring(tokenizer, prompts, candidates, append_eos)
    return naive_score_candidate_ids(model, prompt_ids, candidate_ids, score_rule, max_sequences_per_forward,
                                     content_free_ids=content_free_prompt_ids(tokenizer, content_free_prompts))


def naive_score_candidate_ids(
    model,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    score_rule: str = "sum",
    max_sequences_per_forward: int = 64,
    *,
    content_free_ids: Sequence[Sequence[int]] | None = None,
) -> list[torch.Tensor]:
    """Token-id version of :func:`naive_score_candidates` (no cache: the content-free terms are scored each call)."""
    _require_content_free(score_rule, content_free_ids, len(prompt_ids))
    _check_inputs(model, prompt_ids, candidate_ids)
    device = _device_of(model)
    pairs = [(list(p), list(c)) for p, cands in zip(prompt_ids, candidate_ids) for c in cands]
    flat_scores = []
    for start in range(0, len(pairs), max_sequences_per_forward):
        flat_scores.append(_naive_chunk(model, pairs[start:start + max_sequences_per_forward], device))
    scores = torch.cat(flat_scores)
    if score_rule == "mean":
        scores = scores / torch.tensor([len(c) for _, c in pairs], dtype=torch.float32, device=device)
    elif score_rule == "pmi":
        unconditional = naive_score_candidate_ids(model, content_free_ids, candidate_ids, "sum",
                                                  max_sequences_per_forward)
        scores = scores - torch.cat(unconditional).detach()
    return list(torch.split(scores, [len(cands) for cands in candidate_ids]))


def _naive_chunk(model, pairs: list[tuple[list[int], list[int]]], device: torch.device) -> torch.Tensor:
    lengths = [len(p) + len(c) for p, c in pairs]
    width = max(lengths)
    input_ids = torch.zeros(len(pairs), width, dtype=torch.long)
    attention_mask = torch.zeros(len(pairs), width, dtype=torch.long)
    rows, cols, targets, owners = [], [], [], []
    for row, (prompt, candidate) in enumerate(pairs):
        sequence = prompt + candidate
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        for offset, token in enumerate(candidate):
            rows.append(row)
            cols.append(len(prompt) + offset - 1)
            targets.append(token)
            owners.append(row)
    hidden = model.get_decoder()(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False
    ).last_hidden_state
    gathered = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    token_logprobs = _token_logprobs(
        model, gathered, torch.arange(len(rows), device=device), torch.tensor(targets, device=device)
    )
    return torch.zeros(len(pairs), dtype=torch.float32, device=device).index_add(
        0, torch.tensor(owners, device=device), token_logprobs
    )


def _check_inputs(model, prompt_ids, candidate_ids) -> None:
    if len(prompt_ids) != len(candidate_ids):
        raise ValueError(f"Got {len(prompt_ids)} prompts but {len(candidate_ids)} candidate lists")
    num_embeddings = model.get_input_embeddings().num_embeddings
    for index, (prompt, cands) in enumerate(zip(prompt_ids, candidate_ids)):
        if len(prompt) == 0:
            raise ValueError(f"State {index} has an empty prompt; scoring needs at least one prompt token")
        if len(cands) == 0:
            raise ValueError(f"State {index} has an empty candidate list; there is nothing to score")
        if any(len(c) == 0 for c in cands):
            raise ValueError(f"State {index} has a candidate with no tokens (an empty action string?)")
        largest = max(max(prompt), max(max(c) for c in cands))
        if largest >= num_embeddings:
            raise ValueError(
                f"Token id {largest} is outside the model's vocabulary of {num_embeddings}: "
                f"tokenizer/model mismatch"
            )


def _check_attention_supports_masks(model) -> None:
    implementation = model.config._attn_implementation
    if implementation not in ("eager", "sdpa"):
        raise ValueError(
            f"Shared-prefix scoring needs custom attention masks, which attn_implementation={implementation!r} does "
            f"not take; load the model with attn_implementation='sdpa' (or 'eager')"
        )


@lru_cache(maxsize=None)
def _cache_keyword_of(forward_class: type) -> str:
    parameters = inspect.signature(forward_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _cache_keyword(decoder) -> str:
    """The KV-cache argument's name: newer transformers call it ``cache``, older ``past_key_values``."""
    return _cache_keyword_of(type(decoder))


def _device_of(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def _build_layout(
    prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], device: torch.device
) -> _PackedLayout:
    """Vectorised (numpy) layout building: a Python loop per token would cost more than the GPU forward."""
    batch = len(prompt_ids)
    prompt_lengths = np.array([len(p) for p in prompt_ids], dtype=np.int64)
    prompt_array = np.zeros((batch, prompt_lengths.max()), dtype=np.int64)
    for state, prompt in enumerate(prompt_ids):
        prompt_array[state, : len(prompt)] = prompt
    num_candidates = [len(cands) for cands in candidate_ids]
    flat_candidates = [tokens for cands in candidate_ids for tokens in cands]
    lengths = np.array([len(tokens) for tokens in flat_candidates], dtype=np.int64)
    flat_tokens = np.fromiter(itertools.chain.from_iterable(flat_candidates), dtype=np.int64, count=int(lengths.sum()))
    candidate_start = np.cumsum(lengths) - lengths  # first flat token of each candidate
    state_of_candidate = np.repeat(np.arange(batch), num_candidates)
    first_candidate_of_state = np.cumsum(num_candidates) - num_candidates
    tokens_per_state = np.bincount(state_of_candidate, weights=lengths, minlength=batch).astype(np.int64)
    state_token_start = np.cumsum(tokens_per_state) - tokens_per_state
    token_candidate = np.repeat(np.arange(len(lengths)), lengths)
    token_state = state_of_candidate[token_candidate]
    token_offset = np.arange(len(flat_tokens)) - candidate_start[token_candidate]
    token_column = np.arange(len(flat_tokens)) - state_token_start[token_state]
    continuation = np.zeros((batch, tokens_per_state.max()), dtype=np.int64)
    block = np.full((batch, tokens_per_state.max()), -1, dtype=np.int64)
    offset = np.zeros((batch, tokens_per_state.max()), dtype=np.int64)
    continuation[token_state, token_column] = flat_tokens
    block[token_state, token_column] = token_candidate - first_candidate_of_state[token_state]
    offset[token_state, token_column] = token_offset
    rest = token_offset > 0  # tokens after a candidate's first: predicted by the previous continuation position

    def as_tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(device, non_blocking=True)

    return _PackedLayout(
        prompt_ids=as_tensor(prompt_array),
        prompt_lengths=as_tensor(prompt_lengths),
        continuation_ids=as_tensor(continuation),
        continuation_block=as_tensor(block),
        continuation_offset=as_tensor(offset),
        first_state=as_tensor(state_of_candidate),
        first_target=as_tensor(flat_tokens[candidate_start]),
        rest_row=as_tensor(token_state[rest]),
        rest_col=as_tensor(token_column[rest] - 1),
        rest_target=as_tensor(flat_tokens[rest]),
        rest_candidate=as_tensor(token_candidate[rest]),
        candidate_lengths=as_tensor(lengths),
        num_candidates=num_candidates,
        prompt_id_lists=prompt_ids,
    )


def _continuation_mask(layout: _PackedLayout) -> torch.Tensor:
    """Bool [B, Q, P + Q]: real prompt tokens, plus earlier tokens of the same candidate; padding sees itself."""
    prompt_width = layout.prompt_ids.shape[1]
    continuation_width = layout.continuation_ids.shape[1]
    device = layout.prompt_ids.device
    block = layout.continuation_block
    is_padding = block < 0
    allowed = torch.empty(block.shape[0], continuation_width, prompt_width + continuation_width, dtype=torch.bool,
                          device=device)
    prompt_positions = torch.arange(prompt_width, device=device)
    torch.logical_and(
        prompt_positions[None, None, :] < layout.prompt_lengths[:, None, None], ~is_padding[:, :, None],
        out=allowed[:, :, :prompt_width],
    )
    causal = torch.ones(continuation_width, continuation_width, dtype=torch.bool, device=device).tril()
    same_block = (block[:, :, None] == block[:, None, :]) & ~is_padding[:, :, None]
    own = same_block & causal[None]
    own |= torch.eye(continuation_width, dtype=torch.bool, device=device)[None] & is_padding[:, :, None]
    allowed[:, :, prompt_width:] = own
    return allowed


def _sliding_window(model) -> int | None:
    """The window of the model's sliding-attention layers (Gemma 3, Qwen2 with sliding layers), None if it has none."""
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or ()):
        return model.config.sliding_window
    return None


def _as_attention_mask(model, allowed: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor):
    """[B, 1, Q, KV] mask in the form the attention implementation expects (bool for sdpa, additive for eager).

    A custom 4D mask bypasses HF's own sliding-window mask, so models with sliding layers get HF's per-layer-type
    dict whose sliding entry also hides keys ``sliding_window`` or more positions back (as HF's mask does).
    """
    window = _sliding_window(model)
    if window is None:
        return _mask_tensor(model, allowed)
    in_window = query_positions[:, :, None] - key_positions[:, None, :] < window
    return {"full_attention": _mask_tensor(model, allowed), "sliding_attention": _mask_tensor(model, allowed & in_window)}


def _mask_tensor(model, allowed: torch.Tensor) -> torch.Tensor:
    allowed = allowed[:, None]
    if model.config._attn_implementation == "sdpa":
        return allowed
    dtype = model.get_input_embeddings().weight.dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _score_layout(
    model, layout: _PackedLayout, per_token: bool, mode: str, compiled: bool = False, packed: bool = False
) -> list[torch.Tensor]:
    """Candidate scores of one micro-batch; ``packed`` (lean mode) prefills the prompts without their padding."""
    decoder = model.get_decoder()
    batch = layout.prompt_ids.shape[0]
    positions = layout.prompt_lengths[:, None] + layout.continuation_offset
    continuation_mask = _continuation_mask(layout)
    last_prompt = layout.prompt_lengths - 1
    state_index = torch.arange(batch, device=layout.prompt_ids.device)
    final_norm = None
    if mode == "lean":
        if packed:
            prompt_end_hidden, prompt_cache = lean_prefill_packed(model, *_packed_prompts(layout), compiled=compiled)
        else:
            prompt_hidden, prompt_cache = lean_prefill(model, layout.prompt_ids, compiled)
            prompt_end_hidden = prompt_hidden[state_index, last_prompt]
        continuation_hidden = lean_continue(model, layout.continuation_ids, positions, prompt_cache,
                                            continuation_mask, compiled)
        final_norm = decoder.norm  # the lean forward leaves it to us: apply it to the needed rows only
    elif mode == "prefix_cache":
        # Right padding + causal attention leaves the real prompt tokens exact; the pads are masked out below.
        cache = DynamicCache()
        cache_keyword = _cache_keyword(decoder)
        prefill = decoder(input_ids=layout.prompt_ids, use_cache=True, **{cache_keyword: cache})
        prompt_end_hidden = prefill.last_hidden_state[state_index, last_prompt]
        continuation_hidden = decoder(
            input_ids=layout.continuation_ids,
            attention_mask=_as_attention_mask(
                model, continuation_mask, positions,
                torch.cat([torch.arange(layout.prompt_ids.shape[1], device=positions.device)[None].expand(batch, -1),
                           positions], dim=1),
            ),
            **{cache_keyword: cache},
            position_ids=positions,
            use_cache=True,
        ).last_hidden_state
    else:
        prompt_width = layout.prompt_ids.shape[1]
        prompt_rows = torch.ones(prompt_width, prompt_width, dtype=torch.bool, device=positions.device).tril()
        prompt_rows = torch.cat(
            [prompt_rows, torch.zeros(prompt_width, continuation_mask.shape[1], dtype=torch.bool, device=positions.device)],
            dim=1,
        )
        full_mask = torch.cat([prompt_rows[None].expand(batch, -1, -1), continuation_mask], dim=1)
        prompt_positions = torch.arange(prompt_width, device=positions.device)[None].expand(batch, -1)
        all_positions = torch.cat([prompt_positions, positions], dim=1)
        hidden = decoder(
            input_ids=torch.cat([layout.prompt_ids, layout.continuation_ids], dim=1),
            attention_mask=_as_attention_mask(model, full_mask, all_positions, all_positions),
            position_ids=all_positions,
            use_cache=False,
        ).last_hidden_state
        prompt_end_hidden = hidden[state_index, last_prompt]
        continuation_hidden = hidden[:, prompt_width:]
    rest_hidden = continuation_hidden[layout.rest_row, layout.rest_col]
    hidden_rows = torch.cat([prompt_end_hidden, rest_hidden])
    if final_norm is not None:
        hidden_rows = final_norm(hidden_rows)
    rows = torch.cat([layout.first_state, batch + torch.arange(len(layout.rest_row), device=hidden_rows.device)])
    targets = torch.cat([layout.first_target, layout.rest_target])
    token_logprobs = _token_logprobs(model, hidden_rows, rows, targets)
    owners = torch.cat([torch.arange(len(layout.first_state), device=rows.device), layout.rest_candidate])
    scores = torch.zeros(len(layout.first_state), dtype=torch.float32, device=rows.device).index_add(
        0, owners, token_logprobs
    )
    if per_token:
        scores = scores / layout.candidate_lengths.to(torch.float32)
    return list(torch.split(scores, layout.num_candidates))


_compiled_logsumexp = None


def _logsumexp_fp32(logits: torch.Tensor) -> torch.Tensor:
    """fp32 log-sum-exp over the vocabulary; on CUDA one compiled pass that casts while reducing (no fp32 copy)."""
    global _compiled_logsumexp
    if logits.device.type != "cuda":
        return torch.logsumexp(logits.float(), dim=-1)
    if _compiled_logsumexp is None:
        _compiled_logsumexp = torch.compile(lambda x: torch.logsumexp(x.float(), dim=-1), dynamic=True)
    return _compiled_logsumexp(logits)


def _token_logprobs(model, hidden_rows: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log p(targets[i] | hidden_rows[rows[i]]), computing the vocabulary softmax in row chunks."""
    lm_head = model.get_output_embeddings()
    order = torch.argsort(rows, stable=True)
    sorted_rows, sorted_targets = rows[order], targets[order]
    boundaries = torch.arange(0, hidden_rows.shape[0] + _LOGIT_CHUNK_ROWS, _LOGIT_CHUNK_ROWS, device=rows.device)
    cuts = torch.searchsorted(sorted_rows, boundaries).tolist()
    pieces = []
    for chunk, start in enumerate(range(0, hidden_rows.shape[0], _LOGIT_CHUNK_ROWS)):
        lo, hi = cuts[chunk], cuts[chunk + 1]
        if lo == hi:
            continue
        logits = lm_head(hidden_rows[start:start + _LOGIT_CHUNK_ROWS])
        local_rows = sorted_rows[lo:hi] - start
        picked = logits[local_rows, sorted_targets[lo:hi]].float()
        pieces.append(picked - _logsumexp_fp32(logits)[local_rows])
    sorted_logprobs = torch.cat(pieces)
    return torch.empty_like(sorted_logprobs).scatter(0, order, sorted_logprobs)
