"""A lean forward pass of Qwen2/Llama decoders for shared-prefix scoring (the ``mode="lean"`` scorer).

It calls the model's own submodules (embeddings, projections, norms, MLPs, rotary embedding), so the weights,
LoRA adapters and autocast all apply, but skips the HF wrapper machinery around them. That machinery costs tens of
milliseconds of Python per forward on a 24-layer model, which made the two-pass prefix-cache scorer CPU-bound at
small batches. It also lets the prefill use the flash kernel with native GQA (no K/V head copies), keeps the prompt's
K/V as plain tensors, and applies the final norm only to the rows whose logits are needed.

On CUDA the per-layer functions can be compiled (``compiled=True``): one ``torch.compile`` graph, shared by all
layers of the same shape, fuses the residual adds, norms, rotary and SwiGLU element-wise work around the matmuls.
Shapes are symbolic from the first compile (``dynamic=True``): batch, prompt and continuation widths vary from call
to call, and torch.compile's default (static first, each dimension made dynamic when it first changes) recompiled
once per newly varying dimension, stalls of seconds in the middle of collection.

Prompts of one call differ in length (history and observations vary), and a right-padded prefill pays for every
pad. :func:`lean_prefill_packed` runs the prompts' real tokens back to back instead, with flash variable-length
attention (``torch.nn.attention.varlen``; CUDA, bf16/fp16), and scatters each layer's K/V into the padded layout
the continuation reads. It is opt-in (``packed_prefill``): on one H200 with SmolLM2-135M it gained at some batch
sizes and prompt lengths and lost at others, 8 states per call included (docs/results/gpu_speed.md, section 7).

Supported: decoder layers of the Qwen2 and Llama families with full attention (no sliding window) and no attention
dropout while training; :func:`check_lean_support` says why a model is not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lzero_ext.utils.segment_attention import segment_attention

_compiled_rotary = None


def check_lean_support(model, training: bool | None = None) -> None:
    """Raise ``ValueError`` naming the reason if the lean forward cannot reproduce this model exactly.

    ``training`` (default: ``model.training``) matters only for models with attention dropout.
    """
    training = model.training if training is None else training
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    decoder = model.get_decoder()
    for index, layer in enumerate(decoder.layers):
        if type(layer) not in (Qwen2DecoderLayer, LlamaDecoderLayer):
            raise ValueError(
                f"mode='lean' supports Qwen2/Llama decoder layers, not {type(layer).__name__} (e.g. Gemma 3's "
                f"query/key norms, extra norms and sliding-window layers are not re-implemented); use 'prefix_cache'"
            )
        attention = layer.self_attn
        if getattr(attention, "sliding_window", None) is not None:  # HF attribute, set only for sliding layers
            raise ValueError(f"mode='lean' does not support sliding-window attention (layer {index})")
        if attention.attention_dropout > 0 and training:
            raise ValueError("mode='lean' does not support attention dropout while training")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rotate_pair(query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    return _rotate(query, cos, sin), _rotate(key, cos, sin)


def _apply_rotary(query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """HF's rotate-half rotary embedding of queries and keys; on CUDA one compiled call instead of twelve kernels."""
    global _compiled_rotary
    if query.device.type != "cuda" or torch.compiler.is_compiling():  # inside a compiled layer: let it fuse
        return _rotate_pair(query, key, cos, sin)
    if _compiled_rotary is None:
        _compiled_rotary = torch.compile(_rotate_pair, dynamic=True)
    return _compiled_rotary(query, key, cos, sin)


def _project(attention, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Queries, keys (rotated while still token-major, which keeps the rotary kernel's reads contiguous), values."""
    batch, length, _ = hidden.shape
    shape = (batch, length, -1, attention.head_dim)
    query = attention.q_proj(hidden).view(shape)
    key = attention.k_proj(hidden).view(shape)
    value = attention.v_proj(hidden).view(shape).transpose(1, 2)
    query, key = _apply_rotary(query, key, cos[:, :, None], sin[:, :, None])
    return query.transpose(1, 2), key.transpose(1, 2), value


def _merge_heads(attention, output: torch.Tensor) -> torch.Tensor:
    batch, _, length, _ = output.shape
    return attention.o_proj(output.transpose(1, 2).reshape(batch, length, -1))


def _mlp_block(layer, hidden: torch.Tensor) -> torch.Tensor:
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _prefill_layer(layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    attention = layer.self_attn
    query, key, value = _project(attention, layer.input_layernorm(hidden), cos, sin)
    output = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=attention.scaling, enable_gqa=True)
    return _mlp_block(layer, hidden + _merge_heads(attention, output)), key, value


def _continue_layer(layer, hidden, cos, sin, prompt_key, prompt_value, mask):
    attention = layer.self_attn
    query, key, value = _project(attention, layer.input_layernorm(hidden), cos, sin)
    groups = query.shape[1] // key.shape[1]
    key = torch.cat([prompt_key, key], dim=2).repeat_interleave(groups, dim=1)
    value = torch.cat([prompt_value, value], dim=2).repeat_interleave(groups, dim=1)
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling)
    return _mlp_block(layer, hidden + _merge_heads(attention, output))


def _packed_prefill_layer(layer, hidden, cos, sin, offsets, longest: int, token_state, token_position, batch: int):
    """:func:`_prefill_layer` on packed tokens ``[1, T, H]``; K/V come back padded ``[B, kv_heads, longest, dim]``."""
    attention = layer.self_attn
    query, key, value = _project(attention, layer.input_layernorm(hidden), cos, sin)  # [1, heads, T, dim]
    query, key, value = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)
    output = segment_attention(query, key, value, offsets, longest, causal=True, scale=attention.scaling)
    hidden = _mlp_block(layer, hidden + attention.o_proj(output.reshape(1, output.shape[0], -1)))
    padded_key = key.new_zeros(batch, longest, key.shape[1], key.shape[2])
    padded_value = torch.zeros_like(padded_key)
    padded_key[token_state, token_position] = key
    padded_value[token_state, token_position] = value
    return hidden, padded_key.transpose(1, 2), padded_value.transpose(1, 2)


_compiled_layers: dict[str, object] = {}


def _layer_function(name: str, compiled: bool, device: torch.device):
    """The eager layer function, or (CUDA only) its compiled version, built once per process."""
    eager = {"prefill": _prefill_layer, "packed_prefill": _packed_prefill_layer, "continue": _continue_layer}[name]
    if not compiled or device.type != "cuda":
        return eager
    if name not in _compiled_layers:
        _compiled_layers[name] = torch.compile(eager, dynamic=True)
    return _compiled_layers[name]


def lean_prefill(
    model, input_ids: torch.Tensor, compiled: bool = False
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Causal pass over right-padded prompts: (un-normed last hidden states [B, P, H], per-layer (K, V)).

    Right padding keeps every real token exact under plain causal attention; the pads' K/V are masked later.
    """
    decoder = model.get_decoder()
    hidden = decoder.embed_tokens(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    cos, sin = decoder.rotary_emb(hidden, positions)
    layer_fn = _layer_function("prefill", compiled, input_ids.device)
    cache = []
    for layer in decoder.layers:
        hidden, key, value = layer_fn(layer, hidden, cos, sin)
        cache.append((key, value))
    return hidden, cache


def lean_prefill_packed(
    model,
    tokens: torch.Tensor,
    offsets: torch.Tensor,
    token_state: torch.Tensor,
    token_position: torch.Tensor,
    longest: int,
    compiled: bool = False,
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """:func:`lean_prefill` on the prompts' real tokens only: (un-normed hidden state of each prompt's last token
    [B, H], per-layer (K, V) right-padded to ``longest`` as :func:`lean_prefill` returns them, zeros at the pads).

    ``tokens`` [T] are the prompts back to back, ``offsets`` [B + 1] (int32) where each starts, ``token_state`` and
    ``token_position`` [T] each token's prompt and position in it, ``longest`` the longest prompt.
    """
    decoder = model.get_decoder()
    hidden = decoder.embed_tokens(tokens)[None]
    cos, sin = decoder.rotary_emb(hidden, token_position[None])
    batch = offsets.shape[0] - 1
    layer_fn = _layer_function("packed_prefill", compiled, tokens.device)
    cache = []
    for layer in decoder.layers:
        hidden, key, value = layer_fn(layer, hidden, cos, sin, offsets, longest, token_state, token_position, batch)
        cache.append((key, value))
    return hidden[0, offsets[1:].long() - 1], cache


def lean_continue(
    model,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: list[tuple[torch.Tensor, torch.Tensor]],
    allowed: torch.Tensor,
    compiled: bool = False,
) -> torch.Tensor:
    """Continuation tokens attending to the cached prompt and to each other as ``allowed`` [B, Q, P + Q] says."""
    decoder = model.get_decoder()
    hidden = decoder.embed_tokens(input_ids)
    cos, sin = decoder.rotary_emb(hidden, position_ids)
    mask = allowed[:, None]
    layer_fn = _layer_function("continue", compiled, input_ids.device)
    for layer, (prompt_key, prompt_value) in zip(decoder.layers, cache):
        hidden = layer_fn(layer, hidden, cos, sin, prompt_key, prompt_value, mask)
    return hidden
