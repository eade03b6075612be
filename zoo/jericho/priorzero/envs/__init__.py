"""PriorZero's Jericho env (``priorzero_jericho``), the valid-action worker and the Z-machine adapter.

``PriorZeroJerichoEnv`` is imported lazily: it pulls in DI-engine and torch, which the valid-action worker
process (which imports this package) must not pay for.
"""
from __future__ import annotations

from typing import Any

__all__ = ["PriorZeroJerichoEnv"]


def __getattr__(name: str) -> Any:
    if name == "PriorZeroJerichoEnv":
        from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

        return PriorZeroJerichoEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
