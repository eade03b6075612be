"""Attention within the segments of packed tokens (many sequences back to back, no padding).

Flash variable-length attention (``torch.nn.attention.varlen``, PyTorch >= 2.9) on CUDA in half precision, an exact
block-diagonal mask elsewhere (the CPU, tests). Shared by the world model's packed text encoder and the LLM scorer's
packed prefill, so both follow the same kernel choice and the same PyTorch-version differences.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

try:  # PyTorch >= 2.9
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older PyTorch: callers keep their padded paths
    varlen_attn = None

# varlen_attn's keywords changed across releases: ``is_causal`` became ``window_size``; ``scale`` and GQA came later.
_VARLEN_PARAMETERS = frozenset(inspect.signature(varlen_attn).parameters) if varlen_attn is not None else frozenset()


def varlen_available() -> bool:
    """Whether this PyTorch has flash variable-length attention."""
    return varlen_attn is not None


def segment_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: torch.Tensor,
                      longest: int, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Attention of packed ``query [T, heads, dim]`` over ``key``/``value [T, kv_heads, dim]`` within each segment.

    ``bounds`` (int32, ``[segments + 1]``) are where segments start (cumulative lengths), ``longest`` the longest
    segment; ``causal`` also hides later tokens of the same segment; fewer key/value heads are shared by groups of
    query heads (GQA). Returns ``[T, heads, dim]``.
    """
    grouped = key.shape[1] != query.shape[1]
    if query.is_cuda and varlen_attn is not None and query.dtype in (torch.bfloat16, torch.float16):
        kwargs: dict = {}
        if causal:
            kwargs.update({"is_causal": True} if "is_causal" in _VARLEN_PARAMETERS else {"window_size": (-1, 0)})
        if scale is not None:
            if "scale" in _VARLEN_PARAMETERS:
                kwargs["scale"] = scale
            elif abs(scale - query.shape[-1] ** -0.5) > 1e-9:
                raise ValueError(f"this PyTorch's varlen_attn has no scale argument; the model scales by {scale}")
        if grouped and "enable_gqa" in _VARLEN_PARAMETERS:
            kwargs["enable_gqa"] = True
        elif grouped:
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        return varlen_attn(query, key, value, bounds, bounds, longest, longest, **kwargs)
    segment = torch.searchsorted(bounds[1:], torch.arange(query.shape[0], device=query.device, dtype=bounds.dtype),
                                 right=True)
    mask = segment[:, None] == segment[None, :]
    if causal:
        mask = mask.tril()
    output = F.scaled_dot_product_attention(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
                                            attn_mask=mask, scale=scale, enable_gqa=grouped)
    return output.transpose(0, 1)
