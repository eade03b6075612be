"""Strict config merging.

DI-engine merges user configs with ``new_keys_allowed=True``, so a misspelt key is silently ignored. PriorZero
merges with :func:`merge_strict` instead: an unknown key raises ``KeyError`` naming the full path of the key and
the nearest valid one, so a typo fails at start instead of wasting a run.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping

from easydict import EasyDict


def _nearest(key: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return matches[0] if matches else "<none>"


def unknown_key_error(key: str, valid: list[str], where: str) -> KeyError:
    """Build the error for an unknown config key ``where.key``, naming the nearest valid key."""
    return KeyError(
        f"Unknown config key '{where}.{key}'; did you mean '{where}.{_nearest(key, valid)}'? "
        f"Valid keys: {sorted(valid)}"
    )


def check_keys(default: Mapping, user: Mapping, where: str, open_keys: tuple[str, ...] = ()) -> None:
    """Raise ``KeyError`` for any key of ``user`` absent from ``default`` (recursing into nested dicts).

    Args:
        default: the complete set of valid keys with their default values.
        user: the user's (partial) config.
        where: dotted path of ``user`` inside the full config, for the error message.
        open_keys: dotted paths (relative to ``where``) whose sub-keys are free-form, e.g. ``("model_kwargs",)``.
    """
    for key, value in user.items():
        if key not in default:
            raise unknown_key_error(key, list(default.keys()), where)
        if key in open_keys:
            continue
        if isinstance(value, Mapping) and isinstance(default[key], Mapping):
            nested_open = tuple(k[len(key) + 1:] for k in open_keys if k.startswith(key + "."))
            check_keys(default[key], value, f"{where}.{key}", nested_open)


def deep_merge(default: Mapping, user: Mapping) -> dict:
    """Return a deep copy of ``default`` with ``user``'s values merged in (nested dicts merged, others replaced)."""
    merged = copy.deepcopy(dict(default))
    for key, value in user.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_strict(
    default: Mapping, user: Mapping | None, where: str, open_keys: tuple[str, ...] = ()
) -> EasyDict:
    """Merge ``user`` into ``default`` after checking that every user key exists in ``default``."""
    user = user or {}
    check_keys(default, user, where, open_keys)
    return EasyDict(deep_merge(default, user))
