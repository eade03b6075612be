"""Bad input gives a clear error that names the problem."""
from __future__ import annotations

import shutil

import pytest

from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv
from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH


def test_missing_story_file(tmp_path):
    missing = tmp_path / "nope.z5"
    with pytest.raises(FileNotFoundError, match="nope.z5"):
        PriorZeroJerichoEnv({"game_path": str(missing)})


def test_non_story_file(tmp_path):
    text_file = tmp_path / "notes.z5"
    text_file.write_text("This is a text file, not a Z-machine story. " * 10)
    with pytest.raises(ValueError, match="Not a Z-machine story file.*notes.z5"):
        PriorZeroJerichoEnv({"game_path": str(text_file)})


def test_directory_as_story(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        PriorZeroJerichoEnv({"game_path": str(tmp_path)})


def test_unknown_config_key_names_the_nearest_valid_key():
    with pytest.raises(KeyError, match="max_step.*did you mean 'env.max_steps'"):
        PriorZeroJerichoEnv({"max_step": 10})


@pytest.mark.parametrize("value", [0, -5, 2.5, True])
def test_max_steps_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="max_steps"):
        PriorZeroJerichoEnv({"max_steps": value})


@pytest.mark.parametrize("key,value", [("action_space_size", 0), ("max_seq_len", -1),
                                       ("valid_action_timeout_s", 0.0), ("object_extractor", "nltk")])
def test_other_bad_values(key, value):
    with pytest.raises(ValueError, match=key):
        PriorZeroJerichoEnv({key: value})


def test_unsupported_game_without_metadata(tmp_path):
    story = tmp_path / "copy.z5"
    shutil.copyfile(DEFAULT_GAME_PATH, story)
    with pytest.raises(ValueError, match="no adapter metadata"):
        PriorZeroJerichoEnv({"game_path": str(story)})


def test_missing_tokenizer_path(tmp_path):
    env = PriorZeroJerichoEnv({"tokenizer_path": str(tmp_path / "no_tokenizer"), "generate_valid_actions": False})
    with pytest.raises(FileNotFoundError, match="no_tokenizer"):
        env.reset()
    env.close()


def test_step_before_reset():
    env = PriorZeroJerichoEnv({})
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
