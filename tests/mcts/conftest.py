"""Fixtures for the MCTS tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine threads contend badly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
