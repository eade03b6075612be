"""Fixtures for the LLM tests: the tiny default model (its directory: ``tiny_model_dir`` in tests/conftest.py)."""
from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(autouse=True)
def _one_torch_thread(single_torch_thread):
    yield
