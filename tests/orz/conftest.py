"""Fixtures for the ORZ hook tests: the tiny default tokenizer, sample steps and the ORZ stand-in on the path."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from lzero_ext.llm.default_model import ensure_default_model
from lzero_ext.llm.loading import load_tokenizer
from lzero_ext.llm.prompt import PromptBuilder
from lzero_ext.llm.types import LLMSample, Turn

HERE = Path(__file__).parent


def _drop_orz_modules() -> None:
    for name in [m for m in sys.modules if m == "orz" or m.startswith("orz.")]:
        del sys.modules[name]


def _put_on_path(monkeypatch, root: Path) -> None:
    _drop_orz_modules()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


@pytest.fixture
def fake_orz(monkeypatch):
    """The ORZ stand-in (tests/orz/fake_orz) importable as ``orz``; yields its ``orz.ppo.trainer`` module."""
    _put_on_path(monkeypatch, HERE / "fake_orz")
    yield importlib.import_module("orz.ppo.trainer")
    _drop_orz_modules()


@pytest.fixture
def pypi_orz(monkeypatch):
    """An unrelated package named ``orz`` without ``orz.ppo`` (like the PyPI one)."""
    _put_on_path(monkeypatch, HERE / "fake_pypi_orz")
    yield
    _drop_orz_modules()


@pytest.fixture
def no_orz():
    """No ``orz`` module importable (skips if this machine really has one)."""
    _drop_orz_modules()
    if importlib.util.find_spec("orz") is not None:
        pytest.skip("a package named 'orz' is installed here")


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(ensure_default_model())


@pytest.fixture
def prompt_builder(tokenizer):
    return PromptBuilder(tokenizer, max_prompt_tokens=1024, history_turns=2)


def make_sample(index: int, num_history: int = 3) -> LLMSample:
    """A step with ``num_history`` past turns, 3 candidates and distinct numbers (so fields cannot be mixed up)."""
    history = [Turn(observation=f"Room {index}-{t}. A lamp flickers.", action=f"go north {t}", reward=float(t))
               for t in range(num_history)]
    return LLMSample(
        history=history,
        observation=f"West of house {index}. There is a mailbox here.",
        candidates=["open mailbox", f"go west {index}", "take leaflet"],
        visit_distribution=np.array([2.0, 1.0, 1.0 + index], dtype=np.float32),
        action_index=index % 3,
        advantage=0.5 + index,
        old_prior_logprob=-1.0 - 0.1 * index,
        group_id=index // 2,
    )


@pytest.fixture
def samples() -> list[LLMSample]:
    return [make_sample(i) for i in range(4)]
