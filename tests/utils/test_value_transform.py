"""Our support-to-scalar transform equals LightZero's (which lives under lzero.policy, unavailable off 3.11)."""
from __future__ import annotations

import pytest
import torch

from lzero_ext.import_utils import is_available
from lzero_ext.utils.value_transform import (
    inverse_scalar_transform,
    phi_transform,
    scalar_to_categorical,
    scalar_transform,
    support_logits_to_scalar,
    support_size,
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


VALUES = torch.tensor([[-1000.0, -60.0, -3.7, -1.0, -0.2, 0.0, 0.2, 1.0, 2.5, 13.0, 50.0, 400.0]])


@pytest.mark.parametrize("support_scale", [10, 50, 300])
def test_scalar_and_phi_transform_equal_lightzero(support_scale):
    lzero_policy = pytest.importorskip("lzero.policy", reason="lzero.policy needs LightZero's compiled tree (3.11)")
    torch.testing.assert_close(scalar_transform(VALUES), lzero_policy.scalar_transform(VALUES))
    x = scalar_transform(VALUES)
    ours = phi_transform(support_scale, x)
    theirs = lzero_policy.phi_transform(lzero_policy.DiscreteSupport(-support_scale, support_scale, 1.0), x.clone())
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours.sum(-1), torch.ones_like(x))


def test_categorical_round_trip_recovers_values_inside_the_support():
    values = torch.tensor([-30.0, -2.5, 0.0, 0.75, 7.0, 40.0])
    categorical = scalar_to_categorical(50, values)
    recovered = support_logits_to_scalar(torch.log(categorical + 1e-12), 50)
    torch.testing.assert_close(recovered, values, rtol=1e-3, atol=1e-3)
    assert categorical.shape[-1] == support_size(50)
