"""The generic Z-machine adapter on our game, and the build script that makes its metadata."""
from __future__ import annotations

import json
import shutil

import pytest

from zoo.jericho.priorzero.envs.zmachine_adapter import GameMetadata, ZMachineAdapter
from zoo.jericho.priorzero.games import DEFAULT_GAME_PATH, DEFAULT_MAX_SCORE, DEFAULT_METADATA_PATH
from zoo.jericho.priorzero.games.build import compile_game, parse_debug_file


@pytest.fixture
def adapter():
    game = ZMachineAdapter(DEFAULT_GAME_PATH, GameMetadata.load(DEFAULT_METADATA_PATH))
    game.reset()
    yield game
    game.close()


def test_object_nouns_come_from_the_object_table(adapter):
    ram = adapter.get_state()[0]
    nouns = {adapter.object_noun(ram, obj) for obj in range(1, adapter.metadata.object_count + 1)}
    assert {"shovel", "mound", "key", "cupboard", "lamp", "matchbox", "door", "lens", "holder", "lever"} <= nouns


def test_world_hash_follows_the_object_table(adapter):
    start_hash, start_state = adapter.world_state_hash(), adapter.get_state()
    adapter.step("examine shovel")
    assert adapter.world_state_hash() == start_hash  # looking changes nothing in the world
    adapter.step("take shovel")
    assert adapter.world_state_hash() != start_hash
    adapter.set_state(start_state)
    assert adapter.world_state_hash() == start_hash


def test_score_moves_and_end_flags(adapter):
    assert (adapter.score(), adapter.moves(), adapter.victory(), adapter.game_over()) == (0, 0, False, False)
    for action in ["take shovel", "east", "dig mound"]:
        adapter.step(action)
    assert adapter.score() == 2 and adapter.moves() == 3
    assert adapter.max_score == DEFAULT_MAX_SCORE


def test_valid_actions_leave_the_state_unchanged_and_differ_from_no_ops(adapter):
    adapter.step("take shovel")
    before = adapter.world_state_hash()
    actions = adapter.valid_actions()
    assert adapter.world_state_hash() == before
    assert actions == ["north", "east", "drop shovel"]
    assert "take shovel" in adapter.candidate_actions()  # tried, but changes nothing: already held


def test_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        GameMetadata.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"md5": "x"}))
    with pytest.raises(ValueError, match="lacks keys"):
        GameMetadata.load(broken)


def test_parse_debug_file_reads_globals_constants_objects():
    text = ("<global-variable><identifier>score</identifier><address>  3164</address></global-variable>"
            "<constant><identifier>MAX_SCORE</identifier><value>  12</value></constant>"
            "<object><identifier>lamp</identifier><value>7</value></object>")
    info = parse_debug_file(text)
    assert info.global_addresses == {"score": 3164}
    assert info.constants["MAX_SCORE"] == 12 and info.objects == {"lamp": 7}


@pytest.mark.skipif(shutil.which("inform6") is None, reason="inform6 not installed (apt-get install inform6-compiler)")
def test_build_reproduces_the_committed_metadata(tmp_path):
    source = DEFAULT_GAME_PATH.with_suffix(".inf")
    story, metadata = compile_game(source, tmp_path)
    committed = json.loads(DEFAULT_METADATA_PATH.read_text())
    for key in ("global_addresses", "object_count", "max_score", "name_property", "zversion"):
        assert metadata[key] == committed[key], key
    # the compiler stamps the build date into the header, so only the size is compared, not the md5
    assert story.stat().st_size == DEFAULT_GAME_PATH.stat().st_size
