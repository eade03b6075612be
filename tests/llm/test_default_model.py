"""The built default model is deterministic, cached, and loads like any HF checkpoint."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lzero_ext.llm.default_model import ensure_default_model


def _digests(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def test_same_seed_gives_bitwise_identical_files(tmp_path):
    first = ensure_default_model(tmp_path / "a", seed=3)
    second = ensure_default_model(tmp_path / "b", seed=3)
    assert first.name == second.name
    assert _digests(first) == _digests(second)


def test_other_seed_gives_other_weights(tmp_path):
    first = AutoModelForCausalLM.from_pretrained(ensure_default_model(tmp_path, seed=0))
    second = AutoModelForCausalLM.from_pretrained(ensure_default_model(tmp_path, seed=1))
    assert not torch.equal(first.model.embed_tokens.weight, second.model.embed_tokens.weight)


def test_cached_build_is_reused(tmp_path):
    first = ensure_default_model(tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_default_model(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary build left behind


def test_loads_with_auto_classes_and_has_chat_tokens(tmp_path):
    directory = ensure_default_model(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert tokenizer.chat_template and tokenizer.eos_token and tokenizer.pad_token
    assert model.config.vocab_size == len(tokenizer)
    assert 2_000 <= len(tokenizer) <= 4_096
    assert 1_000_000 <= model.num_parameters() <= 10_000_000
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "You are in a dark cellar. > open trap door"}],
        tokenize=False, add_generation_prompt=True,
    )
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids) == text
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_concurrent_builds_into_one_cache_are_safe(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = list(pool.map(ensure_default_model, [tmp_path, tmp_path], [11, 11]))
    assert paths[0] == paths[1]
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]
    AutoModelForCausalLM.from_pretrained(paths[0])
