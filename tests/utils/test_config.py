import pytest

from lzero_ext.utils.config import merge_strict


def test_unknown_key_names_path_and_nearest_valid_key():
    default = {"learn": {"batch_size": 8, "learning_rate": 1e-3}, "seed": 0}
    with pytest.raises(KeyError, match=r"policy\.learn\.batch_sise.*policy\.learn\.batch_size"):
        merge_strict(default, {"learn": {"batch_sise": 4}}, where="policy")


def test_merge_is_deep_and_does_not_mutate_defaults():
    default = {"learn": {"batch_size": 8, "learning_rate": 1e-3}, "seed": 0}
    merged = merge_strict(default, {"learn": {"batch_size": 4}}, where="policy")
    assert merged.learn.batch_size == 4 and merged.learn.learning_rate == 1e-3
    assert default["learn"]["batch_size"] == 8


def test_open_keys_accept_free_form_subkeys():
    default = {"model_kwargs": {}, "x": 1}
    merged = merge_strict(default, {"model_kwargs": {"anything": 2}}, where="llm", open_keys=("model_kwargs",))
    assert merged.model_kwargs.anything == 2
