"""Shared pytest fixtures.

Jericho suite games are found through one setting, the environment variable ``PRIORZERO_JERICHO_GAMES``
(default: ``../shared/jericho-games`` relative to the repository root). Tests that need a game skip with
a reason when it is missing; ``.ci/run`` checks the folder exists, so CI never skips them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def jericho_games_dir() -> Path:
    return Path(os.environ.get("PRIORZERO_JERICHO_GAMES", REPO_ROOT.parent / "shared" / "jericho-games"))


@pytest.fixture
def jericho_game():
    """Return a function mapping a story-file name (e.g. ``"zork1.z5"``) to its path, skipping if absent."""

    def _find(name: str) -> Path:
        path = jericho_games_dir() / name
        if not path.is_file():
            pytest.skip(f"Jericho game {name} not found in {jericho_games_dir()} (set PRIORZERO_JERICHO_GAMES)")
        return path

    return _find


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny default LLM, built once per session into a temporary cache."""
    from lzero_ext.llm.default_model import ensure_default_model

    return ensure_default_model(tmp_path_factory.mktemp("priorzero-cache"))


@pytest.fixture
def single_torch_thread():
    """Tiny models: one torch thread is as fast, and avoids thrashing on a shared 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
