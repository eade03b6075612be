"""Our support-to-scalar transform equals LightZero's (which lives under lzero.policy, unavailable off 3.11)."""
from __future__ import annotations

import pytest
import torch

from lzero_ext.import_utils import is_available
from lzero_ext.mcts.scalar_transform import (
    inverse_scalar_transform,
    scalar_transform,
    support_logits_to_scalar,
    support_size_to_scale,
)


def test_inverse_is_the_inverse():
    x = torch.linspace(-300, 300, 1001, dtype=torch.float64)
    torch.testing.assert_close(inverse_scalar_transform(scalar_transform(x)), x, rtol=1e-6, atol=1e-6)


def test_matches_lightzero_inverse_scalar_transform():
    if not is_available("lzero.policy.scaling_transform"):
        pytest.skip("lzero.policy is not importable here (it needs LightZero's compiled tree)")
    from lzero.policy.scaling_transform import InverseScalarTransform

    torch.manual_seed(0)
    logits = torch.randn(64, 101) * 3
    expected = InverseScalarTransform(50, "cpu", True)(logits.clone()).reshape(-1)
    torch.testing.assert_close(support_logits_to_scalar(logits, 50), expected.float(), rtol=1e-5, atol=1e-4)
    scalars = torch.randn(16, 1) * 5
    expected_plain = InverseScalarTransform(50, "cpu", False)(scalars.clone()).reshape(-1)
    torch.testing.assert_close(support_logits_to_scalar(scalars, 50, categorical=False), expected_plain.float())


def test_support_size_checks():
    assert support_size_to_scale(101) == 50
    with pytest.raises(ValueError):
        support_size_to_scale(100)
    with pytest.raises(ValueError, match="bins"):
        support_logits_to_scalar(torch.zeros(2, 11), 50)
