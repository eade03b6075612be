import pytest
import torch

from lzero_ext.policy.world_model import (
    inverse_scalar_transform,
    phi_transform,
    scalar_to_categorical,
    scalar_transform,
    support_size,
)

lzero_policy = pytest.importorskip("lzero.policy", reason="LightZero's lzero.policy needs its compiled tree (Python 3.11)")

VALUES = torch.tensor([[-1000.0, -60.0, -3.7, -1.0, -0.2, 0.0, 0.2, 1.0, 2.5, 13.0, 50.0, 400.0]])


def test_scalar_transform_equals_lightzero():
    torch.testing.assert_close(scalar_transform(VALUES), lzero_policy.scalar_transform(VALUES))


@pytest.mark.parametrize("support_scale", [10, 50, 300])
def test_phi_transform_equals_lightzero(support_scale):
    x = scalar_transform(VALUES)
    ours = phi_transform(support_scale, x)
    theirs = lzero_policy.phi_transform(lzero_policy.DiscreteSupport(-support_scale, support_scale, 1.0), x.clone())
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours.sum(-1), torch.ones_like(x))


@pytest.mark.parametrize("support_scale", [10, 50])
def test_inverse_scalar_transform_equals_lightzero(support_scale):
    logits = torch.randn(16, support_size(support_scale), generator=torch.Generator().manual_seed(0)) * 3
    ours = inverse_scalar_transform(logits, support_scale)
    theirs = lzero_policy.InverseScalarTransform(support_scale, 'cpu', True)(logits.clone())
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, lzero_policy.inverse_scalar_transform(logits.clone(), support_scale).float(),
                               rtol=1e-5, atol=1e-5)


def test_categorical_round_trip_recovers_values_inside_the_support():
    values = torch.tensor([-30.0, -2.5, 0.0, 0.75, 7.0, 40.0])
    categorical = scalar_to_categorical(50, values)
    recovered = inverse_scalar_transform(torch.log(categorical + 1e-12), 50).squeeze(-1)
    torch.testing.assert_close(recovered, values, rtol=1e-3, atol=1e-3)
