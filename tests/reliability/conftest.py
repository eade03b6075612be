"""Fixtures for the reliability tests: the tiny default LLM, built once per session into a temporary cache."""
from __future__ import annotations

import pytest
import torch

from lzero_ext.llm.default_model import ensure_default_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return ensure_default_model(tmp_path_factory.mktemp("priorzero-cache"))


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models: one thread is as fast, and avoids thrashing on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
