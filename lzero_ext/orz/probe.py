"""Whether Open-Reasoner-Zero's stack is usable here, and the one message that says what is missing.

The single answer to "can the ORZ path run?": the start-up summary (``import_utils.availability_summary``) and the
update choice (:func:`lzero_ext.orz.hook.build_llm_update`) both ask :func:`probe_orz_stack`. Nothing of ORZ is
imported unless the ``orz`` package is there; the result is not cached, so it reflects the import path at call time.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Sequence

import torch

ORZ_TRAINER_MODULE = "orz.ppo.trainer"
ORZ_TRAINER_CLASS = "RayPPOTrainer"
ORZ_VLLM_SERIES = "0.6."
ORZ_INSTALL_HINT = (
    "Install Open-Reasoner-Zero from a source checkout (`pip install -e .`; the PyPI package named 'orz' is an "
    "unrelated project) inside its GPU stack (torch 2.5.1, vllm 0.6.5, deepspeed 0.16.0 with ORZ's patches, "
    "ray 2.40.0, flash-attn; see ORZ's Dockerfile)"
)


class OrzUnavailableError(ImportError):
    """``use_orz_trainer=True`` but the ORZ stack is not usable here (the message lists every missing part)."""


def probe_orz_stack() -> list[str]:
    """Every part of ORZ's stack that is missing, as human-readable items (empty list: usable)."""
    missing = []
    if importlib.util.find_spec("orz") is None:
        missing.append("package 'orz' (Open-Reasoner-Zero) is not installed")
    else:
        missing.extend(_probe_orz_trainer())
    for package in ("ray", "deepspeed"):
        if importlib.util.find_spec(package) is None:
            missing.append(f"package '{package}' is not installed")
    missing.extend(_probe_vllm())
    if not torch.cuda.is_available():
        missing.append("CUDA is not available (ORZ's actors and vLLM engines need GPUs)")
    return missing


def _probe_orz_trainer() -> list[str]:
    try:
        module = importlib.import_module(ORZ_TRAINER_MODULE)
    except Exception as error:  # noqa: BLE001 - vLLM / flash-attn failures are not always ImportError
        return [f"{ORZ_TRAINER_MODULE} does not import ({type(error).__name__}: {error})"]
    if not hasattr(module, ORZ_TRAINER_CLASS):
        return [f"'orz' is installed but has no {ORZ_TRAINER_MODULE}.{ORZ_TRAINER_CLASS} "
                f"(the PyPI package named 'orz' is unrelated to Open-Reasoner-Zero)"]
    return []


def _probe_vllm() -> list[str]:
    if importlib.util.find_spec("vllm") is None:
        return [f"package 'vllm' is not installed (ORZ needs the {ORZ_VLLM_SERIES}x V0 engine)"]
    version = importlib.metadata.version("vllm")
    if not version.startswith(ORZ_VLLM_SERIES):
        return [f"vllm {version} is installed but ORZ patches the V0 engine of vllm {ORZ_VLLM_SERIES}x"]
    return []


def unavailable_message(missing: Sequence[str]) -> str:
    """The one start-up message for an unusable ORZ stack."""
    return (
        f"policy.llm.use_orz_trainer=True but the ORZ trainer cannot be used: {'; '.join(missing)}. "
        f"{ORZ_INSTALL_HINT}; or set policy.llm.use_orz_trainer=False, or set "
        f"policy.llm.allow_builtin_trainer_fallback=True to train with the built-in LLMTrainer instead."
    )
