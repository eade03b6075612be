"""GPU out-of-memory in the LLM prior or trainer: halve the micro-batch once, retry, else fail with advice.

Memory use of a run changes over days (longer histories make longer prompts; other jobs share the card), so one
unlucky batch should not end the run. :func:`retry_on_oom` runs ``run(micro_batch)``; on
``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class) it frees the CUDA cache, halves the
micro-batch (of what the batch actually used: halving 32 when the batch has 4 items would change nothing), tells the
owner to keep the smaller size for the rest of the run, and retries once. A second OOM raises ``RuntimeError``
naming the config keys to lower. The retry is handled outside the ``except`` block so the failed attempt's
tensors (held by the traceback's frames) are released before the cache is emptied.
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, TypeVar

import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")

GENERAL_ADVICE = (
    "use LoRA (policy.llm.trainer.use_lora=True), shorter prompts (policy.llm.prompt.max_prompt_tokens / "
    "history_turns), a smaller LLM (--llm-path), or a card with more free memory"
)


def free_cuda_memory() -> None:
    """Collect garbage and return cached CUDA blocks (a no-op without CUDA)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def retry_on_oom(run: Callable[[int], T], micro_batch: int, n_items: int, *, where: str, config_key: str,
                 keep_micro_batch: Callable[[int], None], before_retry: Callable[[], None] | None = None) -> T:
    """``run(micro_batch)``; on GPU OOM, halve the micro-batch once (persisted via ``keep_micro_batch``) and retry.

    ``n_items``: the batch size of this call (the micro-batch actually used is ``min(micro_batch, n_items)``).
    ``before_retry``: undo partial effects of the failed attempt (e.g. accumulated gradients).
    """
    try:
        return run(micro_batch)
    except torch.OutOfMemoryError as exc:
        first_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    free_cuda_memory()
    used = max(1, min(micro_batch, n_items))
    smaller = used // 2
    if smaller < 1:
        raise RuntimeError(
            f"{where} ran out of GPU memory with a micro-batch of 1 ({first_error}); nothing left to halve. Lower "
            f"memory use: {GENERAL_ADVICE}."
        )
    logger.warning("%s ran out of GPU memory with a micro-batch of %d (%s); retrying with %d, kept for the rest of "
                   "the run (%s)", where, used, first_error, smaller, config_key)
    keep_micro_batch(smaller)
    if before_retry is not None:
        before_retry()
    try:
        return run(smaller)
    except torch.OutOfMemoryError as exc:
        second_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    free_cuda_memory()
    raise RuntimeError(
        f"{where} ran out of GPU memory again after halving its micro-batch from {used} to {smaller} "
        f"({second_error}). Lower {config_key} (e.g. to {max(1, smaller // 2)}), or {GENERAL_ADVICE}."
    )
