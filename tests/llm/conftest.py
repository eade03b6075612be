"""Fixtures for the LLM tests: the tiny default model, built once per session into a temporary cache."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lzero_ext.llm.default_model import ensure_default_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return ensure_default_model(tmp_path_factory.mktemp("priorzero-cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(autouse=True)
def single_torch_thread():
    """The models here are tiny: one thread is as fast, and avoids thrashing on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
