"""Optional faster forward for Qwen2/Llama RMSNorm and SwiGLU MLP modules (GPU scoring is memory-bound there).

HF's RMSNorm upcasts the whole activation to fp32 and runs five element-wise kernels; SwiGLU runs two. On an H100
scoring 32 prompts of 1024 tokens with the 0.5B shape, those element-wise passes take about as long as the matmuls.
``fuse_norms_and_mlp`` swaps the forwards of those modules, in place, for ``torch.nn.functional.rms_norm`` (one
kernel, fp32 accumulation, same rounding points as HF) and, on CUDA, a compiled ``silu(gate) * up`` kernel. The
weights and the module tree are unchanged, so training, LoRA and ``save_pretrained`` are unaffected.
"""
from __future__ import annotations

import logging
import types

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_compiled_silu_mul = None


def _silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    global _compiled_silu_mul
    if gate.device.type != "cuda" or torch.compiler.is_compiling():
        return F.silu(gate) * up
    if _compiled_silu_mul is None:
        _compiled_silu_mul = torch.compile(lambda a, b: F.silu(a) * b, dynamic=True)
    return _compiled_silu_mul(gate, up)


def _rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    normalised = F.rms_norm(hidden_states, (hidden_states.shape[-1],), None, self.variance_epsilon)
    return self.weight * normalised


def _swiglu_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(_silu_mul(self.gate_proj(x), self.up_proj(x)))


def _supported_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2RMSNorm

    return (Qwen2RMSNorm, LlamaRMSNorm), (Qwen2MLP, LlamaMLP)


def fuse_norms_and_mlp(model: torch.nn.Module) -> int:
    """Patch the RMSNorm and SiLU-MLP modules of ``model`` in place; returns how many modules were patched."""
    norm_classes, mlp_classes = _supported_classes()
    patched = 0
    for module in model.modules():
        if isinstance(module, norm_classes):
            module.forward = types.MethodType(_rms_norm_forward, module)
            patched += 1
        elif isinstance(module, mlp_classes) and module.config.hidden_act == "silu":
            module.forward = types.MethodType(_swiglu_forward, module)
            patched += 1
    if patched == 0:
        logger.warning("fuse_norms_and_mlp found no Qwen2/Llama RMSNorm or MLP modules in %s", type(model).__name__)
    return patched
