"""The valid-action worker: hang recovery, cache, object extractors."""
from __future__ import annotations

import importlib
import sys
import time

import pytest

from zoo.jericho.priorzero.envs.valid_actions import (
    FALLBACK_ACTIONS, RETRY_BACKOFF_MAX_VISITS, ValidActionGenerator, install_object_extractor, installed_spacy_model,
    make_rule_extractor, retry_backoff_visits,
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


def test_a_timed_out_state_is_retried_at_its_next_visit_not_cached(make_env):
    env = make_env(valid_action_timeout_s=1.0)
    env.reset()
    generator = env.valid_action_generator
    generator.inject_delay_once(60.0)
    assert env.step("take shovel").info["valid_actions_source"] == "fallback"
    state, world_hash = env._backend.get_state(), env._backend.state_key()
    retried = generator.get(state, world_hash)  # the same world state, visited again
    assert retried.source == "worker" and len(retried.actions) > 1 and retried.actions != list(FALLBACK_ACTIONS)
    assert generator.get(state, world_hash).source == "cache"  # generated actions are cached as before
    assert generator.stats.timeouts == 1 and generator.stats.retry_successes == 1


class _SlowGenerator(ValidActionGenerator):
    """Fake worker: each ask for a state in ``slow`` sleeps past the timeout and fails; others answer at once."""

    def __init__(self, slow: set[tuple], timeout_s: float = 0.05) -> None:
        from zoo.jericho.priorzero.envs.game_backend import inspect_story
        from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH

        super().__init__(inspect_story(DEFAULT_GAME_PATH), None, timeout_s=timeout_s, cache_size=8)
        self.slow = slow
        self.asked: list[tuple] = []

    def _ask_worker(self, state: tuple) -> tuple[list[str], str]:
        self.asked.append(state)
        if state in self.slow:
            time.sleep(self.timeout_s * 2)
            self.stats.timeouts += 1
            return list(FALLBACK_ACTIONS), "fallback"
        return [f"act in {state[0]}"], "worker"


def test_a_state_that_always_times_out_backs_off_with_bounded_retries():
    generator = _SlowGenerator(slow={("hang",)})
    sources = [generator.get(("hang",), "h-hang").source for _ in range(100)]
    assert set(sources) == {"fallback"}
    # asked at visits 1, 2, 4, 8, 16, 32, 64 (skips 0, 1, 3, 7, 15, 31 after failures 1..6), then every 33 visits
    asked_at = [1, 2, 4, 8, 16, 32, 64, 97]
    assert len(generator.asked) == len(asked_at) and generator.stats.timeouts == len(asked_at)
    assert generator.stats.backoff_skips == 100 - len(asked_at)
    assert [retry_backoff_visits(n) for n in range(1, 9)] == [0, 1, 3, 7, 15, 31, 32, 32]
    assert retry_backoff_visits(50) == RETRY_BACKOFF_MAX_VISITS  # bounded: a lost state is still retried
    # other states are unaffected and still cached
    assert generator.get(("room",), "h-room").source == "worker"
    assert generator.get(("room",), "h-room").source == "cache"


def test_a_state_that_recovers_is_cached_and_its_failure_record_dropped(caplog):
    generator = _SlowGenerator(slow={("busy",)})
    with caplog.at_level("WARNING", logger="zoo.jericho.priorzero.envs.valid_actions"):
        assert generator.get(("busy",), "h-busy").source == "fallback"
    assert "used for this step only" in caplog.text and "retried at its next visit" in caplog.text
    generator.slow.clear()  # the machine is no longer loaded
    assert generator.get(("busy",), "h-busy").actions == ["act in busy"]
    assert generator.get(("busy",), "h-busy").source == "cache"
    assert generator.stats.retry_successes == 1 and not generator._failed


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
