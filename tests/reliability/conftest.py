"""The reliability tests run tiny models: one torch thread each (fixtures in tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(single_torch_thread):
    yield
