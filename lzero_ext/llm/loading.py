"""Load a causal LM and its tokenizer from a local directory, with clear errors for the usual mistakes."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lzero_ext.llm.default_model import ensure_default_model
from lzero_ext.llm.scoring import check_vocab_compatible

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``'auto'`` means CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``'auto'`` means bf16 on GPU and fp32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    """``None`` selects the project's tiny default model (built on first use); a preset name (e.g.
    ``'smollm2-135m'``, see :mod:`lzero_ext.llm.presets`) its converted directory; otherwise an HF directory.

    An existing path wins over a preset of the same name.
    """
    if model_path is None:
        return ensure_default_model()
    path = Path(model_path).expanduser()
    if not path.exists() and isinstance(model_path, str):
        from lzero_ext.llm.presets import is_preset_name, prepare_preset, preset_names

        if is_preset_name(model_path):
            return prepare_preset(model_path)
        raise FileNotFoundError(
            f"LLM model {model_path!r} is neither a directory nor a model preset; set model_path to a Hugging Face "
            f"model directory or one of the presets: {', '.join(preset_names())}"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"LLM model directory {str(path)!r} does not exist (set model_path to an HF model dir)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} has no config.json: it is not a Hugging Face model directory")
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(model_path: str | os.PathLike | None, device: str = "auto", dtype: str = "auto"):
    """Return ``(model, tokenizer, path)``; the model uses sdpa attention, which shared-prefix scoring needs."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model_path)
    torch_device = resolve_device(device)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, torch_device), attn_implementation="sdpa")
    check_vocab_compatible(model, tokenizer)
    logger.info("Loaded LLM from %s on %s (%.1fM parameters)", path, torch_device, model.num_parameters() / 1e6)
    return model.to(torch_device).eval(), tokenizer, path
