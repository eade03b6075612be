"""The valid-action worker: hang recovery, cache, object extractors."""
from __future__ import annotations

import importlib
import sys
import time

import pytest

from zoo.jericho.priorzero.envs.valid_actions import (
    ValidActionGenerator, install_object_extractor, installed_spacy_model, make_rule_extractor,
)


def test_injected_hang_is_killed_and_the_episode_continues(make_env):
    env = make_env(valid_action_timeout_s=1.0)
    env.reset()
    generator = env.valid_action_generator
    starts_before = generator.stats.worker_starts
    generator.inject_delay_once(60.0)
    began = time.monotonic()
    timestep = env.step("take shovel")
    waited = time.monotonic() - began
    assert waited < 30.0, "the parent waited for the hung worker instead of killing it"
    assert timestep.info["valid_actions_source"] == "fallback"
    assert timestep.obs["valid_actions"] == ["look"] and timestep.obs["action_mask"].sum() == 1
    assert generator.stats.timeouts == 1
    assert not timestep.done
    timestep = env.step("east")  # a new state: a fresh worker answers normally
    assert timestep.info["valid_actions_source"] == "worker"
    assert "dig mound" in timestep.obs["valid_actions"]
    assert generator.stats.worker_starts == starts_before + 1


def test_cache_answers_revisited_states(make_env):
    env = make_env()
    env.reset()
    first_visit = env.step("east")  # the first visit marks the Dunes visited: a new world state
    env.step("west")
    second_visit = env.step("east")  # same world state as after the first "east"
    assert first_visit.info["valid_actions_source"] == "worker"
    assert second_visit.info["valid_actions_source"] == "cache"
    assert second_visit.obs["valid_actions"] == first_visit.obs["valid_actions"]
    assert env.valid_action_generator.stats.cache_hits == 1


def test_generation_can_be_disabled(make_env):
    env = make_env(generate_valid_actions=False)
    obs = env.reset()
    assert obs["valid_actions"] == ["look"]
    assert env.step("take shovel").info["valid_actions_source"] == "disabled"
    assert env.valid_action_generator.stats.worker_starts == 0


def test_generator_rejects_bad_settings():
    from zoo.jericho.priorzero.envs.game_backend import inspect_story
    from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH

    story = inspect_story(DEFAULT_GAME_PATH)
    with pytest.raises(ValueError, match="timeout"):
        ValidActionGenerator(story, None, timeout_s=0, cache_size=1)
    with pytest.raises(ValueError, match="object_extractor"):
        ValidActionGenerator(story, None, timeout_s=1, cache_size=1, object_extractor="nltk")


def test_rule_extractor_keeps_dictionary_nouns_and_adjectives_only():
    extract = make_rule_extractor([("mailbox", True, False), ("small", False, True), ("north", True, False),
                                   ("open", False, False)])
    found = extract("There is a small mailbox here. You can open it, or go north.")
    assert found == {("mailbox", "NOUN"), ("small", "ADJ")}


class _FakeJerichoBackend:
    def dictionary_words(self) -> list[tuple[str, bool, bool]]:
        return [("lamp", True, False)]


def test_rule_extractor_is_installed_in_the_real_jericho_util_module_after_torch():
    import torch  # noqa: F401 - the trap: after torch, the attribute jericho.util may be ctypes.util
    import jericho  # noqa: F401

    jericho_util = sys.modules["jericho.util"]
    original = jericho_util.extract_objs
    try:
        assert install_object_extractor("rules", _FakeJerichoBackend()) == "rules"
        assert importlib.import_module("jericho.util").extract_objs("A lamp.") == {("lamp", "NOUN")}
    finally:
        jericho_util.extract_objs = original


def test_adapter_games_need_no_extractor():
    assert install_object_extractor("spacy", object()) == "adapter"


@pytest.mark.skipif(installed_spacy_model() is None, reason="no spaCy English model installed")
def test_spacy_extractor_is_used_when_a_model_is_installed(make_env, jericho_game):
    env = make_env(game_path=jericho_game("zork1.z5"), object_extractor="spacy", max_steps=2)
    obs = env.reset()
    assert env.valid_action_generator.extractor_in_use == f"spacy:{installed_spacy_model()}"
    assert {"north", "south", "west"} <= set(obs["valid_actions"])


def test_spacy_mode_without_model_is_a_clear_error(monkeypatch):
    import zoo.jericho.priorzero.envs.valid_actions as valid_actions

    monkeypatch.setattr(valid_actions, "installed_spacy_model", lambda: None)
    with pytest.raises(ImportError, match="spaCy models"):
        valid_actions.install_object_extractor("spacy", _FakeJerichoBackend())
