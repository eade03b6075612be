"""Stand-in for ``orz.ppo.utils`` (test-only): records what PriorZero's runtime builder passes."""
from __future__ import annotations

CALLS: list[tuple] = []


def _validate_args(cfg) -> None:
    CALLS.append(("validate_args", cfg))


def get_strategy(cfg) -> str:
    CALLS.append(("get_strategy", cfg))
    return "deepspeed-strategy"


def create_vllm_engines(*args) -> list[str]:
    CALLS.append(("create_vllm_engines", args))
    return [f"vllm-engine-{i}" for i in range(args[0])]


def normalize_advantages(buffer):
    CALLS.append(("normalize_advantages", len(buffer)))
    return buffer
