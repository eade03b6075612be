import pytest
import torch

from lzero_ext.entry.checkpoint import CheckpointManager, CorruptCheckpointError, IncompatibleCheckpointError


def test_save_keeps_last_n_and_loads_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for it in range(4):
        manager.save({"w": torch.full((2,), float(it))}, it, fingerprint="abc")
    assert [p.name for p in manager.list()] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    state, path = manager.load_latest("abc")
    assert path.name == "ckpt_00000003.pt" and torch.equal(state["w"], torch.full((2,), 3.0))


def test_truncated_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save({"iteration": 1}, 1, "abc")
    newest = manager.save({"iteration": 2}, 2, "abc")
    newest.write_bytes(newest.read_bytes()[:20])
    with pytest.raises(CorruptCheckpointError):
        manager.load(newest)
    state, path = manager.load_latest("abc")
    assert state == {"iteration": 1} and path.name == "ckpt_00000001.pt"


def test_foreign_file_and_incompatible_config_are_named_errors(tmp_path):
    manager = CheckpointManager(tmp_path)
    foreign = tmp_path / "ckpt_00000005.pt"
    torch.save({"something": "else"}, foreign)
    with pytest.raises(CorruptCheckpointError, match="not a PriorZero checkpoint"):
        manager.load(foreign)
    good = manager.save({"x": 1}, 6, "abc")
    with pytest.raises(IncompatibleCheckpointError, match="different model/env config"):
        manager.load(good, fingerprint="xyz")
    with pytest.raises(FileNotFoundError):
        manager.load(tmp_path / "missing.pt")


def test_no_temporary_files_left_behind(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save({"x": 1}, 0, "abc")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_00000000.pt"]
