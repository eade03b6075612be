"""Value/reward transforms between scalars and categorical supports, as LightZero's world models are trained.

LightZero keeps these helpers in ``lzero.policy.scaling_transform``, but importing anything under ``lzero.policy``
imports the compiled search tree, which only exists for CPython 3.11. This module re-implements them with torch only
(the search turns head outputs into scalars; the world-model learner turns targets into two-hot categoricals), and
``tests/utils/test_value_transform.py`` checks equality with LightZero's.

The transform is MuZero's invertible value rescaling ``h(x) = sign(x)(sqrt(|x|+1)-1) + eps*x`` (Pohlen et al.,
2018, Proposition A.2); networks predict a categorical distribution over the integer support ``[-scale, scale]`` of
``h(x)``, and the scalar is ``h^-1`` of that distribution's mean.
"""
from __future__ import annotations

import torch


def support_size(support_scale: int) -> int:
    """Number of bins of the categorical support ``[-support_scale, support_scale]`` with unit spacing."""
    return 2 * support_scale + 1


def support_size_to_scale(support_size: int) -> int:
    """LightZero's world-model configs give the number of bins (e.g. 101); the policy config gives its half width (50)."""
    if support_size < 3 or support_size % 2 == 0:
        raise ValueError(f"A categorical support needs an odd number of bins >= 3, got support_size={support_size}")
    return (support_size - 1) // 2


def scalar_transform(x: torch.Tensor, epsilon: float = 0.001) -> torch.Tensor:
    """The rescaling ``h(x)`` applied to value and reward targets before they become categorical."""
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + epsilon * x


def inverse_scalar_transform(scaled: torch.Tensor, epsilon: float = 0.001) -> torch.Tensor:
    """``h^-1``: map a value in the rescaled space back to the original scale."""
    root = (torch.sqrt(1 + 4 * epsilon * (torch.abs(scaled) + 1 + epsilon)) - 1) / (2 * epsilon)
    return torch.sign(scaled) * (root * root - 1)


def support_logits_to_scalar(
    logits: torch.Tensor, support_scale: int, epsilon: float = 0.001, categorical: bool = True
) -> torch.Tensor:
    """Turn value or reward head outputs of shape ``[B, 2*scale+1]`` (or ``[B, 1]`` if not categorical) into ``[B]``.

    Unlike LightZero's ``InverseScalarTransform``, the softmax is always applied: LightZero skips it when every row
    already sums to one, which raw head logits never do in practice.
    """
    if categorical:
        expected = 2 * support_scale + 1
        if logits.shape[-1] != expected:
            raise ValueError(
                f"Categorical logits have {logits.shape[-1]} bins but support_scale={support_scale} needs {expected}"
            )
        support = torch.arange(-support_scale, support_scale + 1, device=logits.device, dtype=torch.float32)
        scaled = (torch.softmax(logits.float(), dim=-1) * support).sum(-1)
    else:
        scaled = logits.float().reshape(logits.shape[0])
    return inverse_scalar_transform(scaled, epsilon)


def phi_transform(support_scale: int, x: torch.Tensor) -> torch.Tensor:
    """Two-hot categorical target ``[..., support]`` for already-``h``-transformed scalars ``x`` ``[...]``.

    Each scalar is clipped to the support and split between its two neighbouring integer bins.
    """
    x = x.clamp(-support_scale, support_scale)
    low = x.floor()
    p_high = x - low
    low_index = (low + support_scale).long()
    high_index = (low_index + 1).clamp(max=2 * support_scale)
    target = torch.zeros(*x.shape, support_size(support_scale), device=x.device, dtype=torch.float32)
    target.scatter_add_(-1, low_index.unsqueeze(-1), (1 - p_high).unsqueeze(-1).float())
    target.scatter_add_(-1, high_index.unsqueeze(-1), p_high.unsqueeze(-1).float())
    return target


def scalar_to_categorical(support_scale: int, x: torch.Tensor) -> torch.Tensor:
    """Raw scalars (returns, rewards) ``[...]`` to UniZero's categorical targets ``[..., support]``."""
    return phi_transform(support_scale, scalar_transform(x))
