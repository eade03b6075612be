"""GGUF -> HF directory conversion: same logits as transformers' direct GGUF load, marker/rebuild logic, errors.

The GGUF is written here with the ``gguf`` package: a tiny llama (2 layers, hidden 64) whose tokenizer is the
tiny default model's byte-level BPE (vocabulary, merges and special tokens in the GGUF metadata), with one tensor
stored as Q8_0 so that de-quantisation is exercised too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is installed from requirements/models.txt")

from lzero_ext.llm import gguf_conversion  # noqa: E402
from lzero_ext.llm.gguf_conversion import (  # noqa: E402
    GGUF_MARKER,
    GGUFConversionError,
    check_gguf_file,
    conversion_is_current,
    convert_gguf,
    load_gguf_directly,
)

TINY_LLAMA = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, context=256)


def write_tiny_llama_gguf(path: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny llama GGUF with the tokenizer of ``tokenizer_dir`` (a byte-level BPE ``tokenizer.json``)."""
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    for added in spec["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {added["content"] for added in spec["added_tokens"] if added["special"]}
    types = [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in spec["model"]["merges"]]
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())

    dims = TINY_LLAMA
    head_dim = dims["hidden"] // dims["heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(dims["context"])
    writer.add_embedding_length(dims["hidden"])
    writer.add_block_count(dims["layers"])
    writer.add_feed_forward_length(dims["intermediate"])
    writer.add_head_count(dims["heads"])
    writer.add_head_count_kv(dims["kv_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab[config["eos_token"]])
    writer.add_pad_token_id(vocab[config["pad_token"]])
    writer.add_add_bos_token(False)
    template_file = tokenizer_dir / "chat_template.jinja"
    template = config.get("chat_template") or (template_file.read_text() if template_file.is_file() else None)
    if template:
        writer.add_chat_template(template)

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    kv_width = dims["kv_heads"] * head_dim
    writer.add_tensor("token_embd.weight", weight(len(tokens), dims["hidden"]))
    for layer in range(dims["layers"]):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", 1 + weight(dims["hidden"]))
        writer.add_tensor(prefix + "attn_q.weight", weight(dims["hidden"], dims["hidden"]))
        writer.add_tensor(prefix + "attn_k.weight", weight(kv_width, dims["hidden"]))
        writer.add_tensor(prefix + "attn_v.weight", weight(kv_width, dims["hidden"]))
        writer.add_tensor(prefix + "attn_output.weight", weight(dims["hidden"], dims["hidden"]))
        writer.add_tensor(prefix + "ffn_norm.weight", 1 + weight(dims["hidden"]))
        writer.add_tensor(prefix + "ffn_gate.weight", weight(dims["intermediate"], dims["hidden"]))
        up = gguf.quants.quantize(weight(dims["intermediate"], dims["hidden"]), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(prefix + "ffn_up.weight", up, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(prefix + "ffn_down.weight", weight(dims["hidden"], dims["intermediate"]))
    writer.add_tensor("output_norm.weight", 1 + weight(dims["hidden"]))
    writer.add_tensor("output.weight", weight(len(tokens), dims["hidden"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", tiny_model_dir)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_gguf) -> Path:
    return convert_gguf(tiny_gguf, tmp_path_factory.mktemp("converted") / "tiny-llama")


def test_conversion_reproduces_the_direct_gguf_load(converted, tiny_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert {"config.json", "model.safetensors", "tokenizer.json", GGUF_MARKER} <= {p.name for p in converted.iterdir()}
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    direct_model, direct_tokenizer = load_gguf_directly(tiny_gguf)
    texts = ["You are west of a white house.", "<|im_start|>user\nopen mailbox<|im_end|>\n"]
    ids = tokenizer(texts, return_tensors="pt", padding=True)
    direct_ids = direct_tokenizer(texts, return_tensors="pt", padding=True)
    assert torch.equal(ids["input_ids"], direct_ids["input_ids"])
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    with torch.no_grad():
        logits = model(**ids).logits
        direct_logits = direct_model(**direct_ids).logits
    assert logits.shape[-1] == len(tokenizer)
    assert torch.equal(logits, direct_logits)


def test_current_conversion_is_reused_and_a_changed_source_rebuilds(tmp_path, tiny_gguf, tiny_model_dir):
    source = tmp_path / "model.gguf"
    source.write_bytes(tiny_gguf.read_bytes())
    output = convert_gguf(source, tmp_path / "out")
    weights_mtime = (output / "model.safetensors").stat().st_mtime_ns
    assert conversion_is_current(source, output)
    assert convert_gguf(source, output) == output
    assert (output / "model.safetensors").stat().st_mtime_ns == weights_mtime  # not rebuilt

    os.utime(source, ns=(1, 1))  # touched, same bytes: re-hashed, still current
    assert conversion_is_current(source, output)

    write_tiny_llama_gguf(source, tiny_model_dir, seed=1)  # same size, other weights
    assert not conversion_is_current(source, output)
    marker_before = json.loads((output / GGUF_MARKER).read_text())
    convert_gguf(source, output)
    marker_after = json.loads((output / GGUF_MARKER).read_text())
    assert marker_after["source"]["sha256"] != marker_before["source"]["sha256"]
    assert marker_after["source"]["sha256"] == gguf_conversion.file_sha256(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "out"]  # no temp or old dirs left


def test_other_settings_rebuild(tmp_path, tiny_gguf):
    output = convert_gguf(tiny_gguf, tmp_path / "out")
    assert not conversion_is_current(tiny_gguf, output, dtype="bfloat16")
    convert_gguf(tiny_gguf, output, dtype="bfloat16")
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"


def test_missing_file_and_non_gguf_file_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(GGUFConversionError, match="is not a GGUF file"):
        convert_gguf(not_gguf, tmp_path / "out")
    with pytest.raises(GGUFConversionError, match="is not a file"):
        check_gguf_file(tmp_path)
    assert not (tmp_path / "out").exists()


def test_missing_gguf_package_names_the_pip_command(monkeypatch, tiny_gguf, tmp_path):
    import builtins

    real_import = builtins.__import__

    def without_gguf(name, *args, **kwargs):
        if name == "gguf" or name.startswith("gguf."):
            raise ImportError("No module named 'gguf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_gguf)
    with pytest.raises(ImportError, match=r"pip install --no-deps gguf==0\.19\.0"):
        convert_gguf(tiny_gguf, tmp_path / "out")
