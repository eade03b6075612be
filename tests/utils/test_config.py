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


def test_validator_checks_a_pass_through_dict_and_keeps_its_values_as_given():
    from lzero_ext.utils.config import schema_validator

    default = {"backend": {"manager": None}, "x": 1}
    validators = {"backend.manager": schema_validator({"step_timeout": None, "shared_memory": True})}
    merged = merge_strict(default, {"backend": {"manager": {"shared_memory": False}}}, where="cfg",
                          validators=validators)
    assert merged.backend.manager == {"shared_memory": False}  # not filled from the schema
    with pytest.raises(KeyError, match=r"cfg\.backend\.manager\.shared_memroy.*cfg\.backend\.manager\.shared_memory"):
        merge_strict(default, {"backend": {"manager": {"shared_memroy": False}}}, where="cfg", validators=validators)
    with pytest.raises(TypeError, match=r"cfg\.backend\.manager\.shared_memory.*bool"):
        merge_strict(default, {"backend": {"manager": {"shared_memory": "no"}}}, where="cfg", validators=validators)
    with pytest.raises(TypeError, match="must be a dict"):
        merge_strict(default, {"backend": {"manager": 3}}, where="cfg", validators=validators)


def test_env_manager_keys_are_those_of_ding_managers_and_types_those_env_recovery_restarts():
    from ding.envs.env_manager.base_env_manager import BaseEnvManager
    from ding.envs.env_manager.subprocess_env_manager import SyncSubprocessEnvManager

    from lzero_ext.worker.env_recovery import ENV_MANAGER_TYPES, check_env_manager_config, env_manager_schema

    assert set(env_manager_schema()) == set(BaseEnvManager.config) | set(SyncSubprocessEnvManager.config) | {"type"}
    check_env_manager_config(None)
    check_env_manager_config({"type": "subprocess", "shared_memory": False, "step_timeout": 60, "context": "spawn"})
    with pytest.raises(KeyError, match=r"env\.manager\.step_timout'.*env\.manager\.step_timeout'"):
        check_env_manager_config({"step_timout": 60})
    with pytest.raises(ValueError, match=r"env\.manager\.type must be one of \('base', 'subprocess'\)"):
        check_env_manager_config({"type": "subprocess_v2"})
    assert ENV_MANAGER_TYPES == ("base", "subprocess")


def test_ray_settings_are_checked_against_the_ray_backend_defaults():
    from lzero_ext.worker.ray_collector import RayCollectionBackend

    check = RayCollectionBackend.check_user_config
    check({"ray_address": "auto", "actor_num_cpus": 0.5, "torch_threads": 2})
    with pytest.raises(KeyError, match=r"collect\.ray\.ray_adress'.*collect\.ray\.ray_address'"):
        check({"ray_adress": "auto"})
    with pytest.raises(KeyError, match=r"set as 'collect\.num_collectors'"):
        check({"num_collectors": 4})
    with pytest.raises(TypeError, match=r"collect\.ray\.object_store_mb.*int"):
        check({"object_store_mb": "128"})
