"""Optional dependencies in one place.

Heavy optional parts (vLLM, Ray, Open-Reasoner-Zero, spaCy models, peft) are imported only where they are used.
These helpers answer "is it there?" without importing it, and raise one clear ``ImportError`` naming the install
command and the config switch that avoids the dependency.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache


@lru_cache(maxsize=None)
def is_available(module: str) -> bool:
    """True if ``module`` (dotted names allowed, e.g. ``orz.ppo.trainer``) can be found without importing it fully."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package raises ModuleNotFoundError
        return False


def is_vllm_available() -> bool:
    return is_available("vllm")


def is_ray_available() -> bool:
    return is_available("ray")


def require(module: str, feature: str, install_hint: str) -> None:
    """Raise ``ImportError`` if ``module`` is missing, saying which feature needs it and how to get it."""
    if not is_available(module):
        raise ImportError(f"{feature} needs the optional package '{module}', which is not installed. {install_hint}")


def availability_summary() -> dict[str, bool]:
    """What optional parts are present, for the start-up summary of the entry ("orz": its whole stack is usable)."""
    from lzero_ext.orz.probe import probe_orz_stack  # the one ORZ check; torch-heavy, so only when asked

    return {
        "vllm": is_vllm_available(),
        "ray": is_ray_available(),
        "orz": not probe_orz_stack(),
        "peft": is_available("peft"),
        "spacy": is_available("spacy"),
    }
