import pytest

from lzero_ext.utils.lr_schedule import check_schedule, lr_factor


def test_warmup_then_cosine_reaches_the_floor_and_stays():
    factors = [lr_factor(s, "cosine", 2, 10, 0.1) for s in range(14)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[6] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert factors[10:] == pytest.approx([0.1] * 4)


def test_linear_and_constant():
    assert lr_factor(5, "linear", 0, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(500, "constant", 0, 10, 0.0) == 1.0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="wm_learner.lr_schedule"):
        check_schedule("step", 0, 10, 0.1, "wm_learner")
    with pytest.raises(ValueError, match="min_lr_ratio"):
        check_schedule("cosine", 0, 10, 1.5, "wm_learner")
