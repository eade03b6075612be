"""Strict config merging.

DI-engine merges user configs with ``new_keys_allowed=True``, so a misspelt key is silently ignored. PriorZero
merges with :func:`merge_strict` instead: an unknown key raises ``KeyError`` naming the full path of the key and
the nearest valid one, so a typo fails at start instead of wasting a run.

A key whose value is passed through to a component outside the project (DI-engine's env manager settings, Ray's
backend settings, ORZ's experiment config) has no full default dict here; it gets a *validator* instead
(``validators``: dotted path -> ``validator(value, where)``), which checks it against what that component accepts.
:func:`schema_validator` builds one from a dict of the valid keys and their defaults.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from typing import Any

from easydict import EasyDict

from lzero_ext.utils.config_types import check_value_types

# validator(user_value, dotted_path): raises KeyError / TypeError / ValueError naming the path
KeyValidator = Callable[[Any, str], None]


def _nearest(key: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return matches[0] if matches else "<none>"


def unknown_key_error(key: str, valid: list[str], where: str) -> KeyError:
    """Build the error for an unknown config key ``where.key``, naming the nearest valid key."""
    return KeyError(
        f"Unknown config key '{where}.{key}'; did you mean '{where}.{_nearest(key, valid)}'? "
        f"Valid keys: {sorted(valid)}"
    )


def _below(paths: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The entries of ``paths`` (dotted) under ``key``, relative to it."""
    return {p[len(key) + 1:]: v for p, v in paths.items() if p.startswith(key + ".")}


def check_keys(default: Mapping, user: Mapping, where: str, open_keys: tuple[str, ...] = (),
               validators: Mapping[str, KeyValidator] | None = None) -> None:
    """Raise ``KeyError`` for any key of ``user`` absent from ``default`` (recursing into nested dicts).

    Args:
        default: the complete set of valid keys with their default values.
        user: the user's (partial) config.
        where: dotted path of ``user`` inside the full config, for the error message.
        open_keys: dotted paths (relative to ``where``) whose sub-keys are free-form, e.g. ``("model_kwargs",)``.
        validators: dotted paths (relative to ``where``) whose value is checked by ``validator(value, path)``
            instead of against ``default`` (a pass-through dict whose valid keys another component defines).
    """
    validators = validators or {}
    for key, value in user.items():
        if key not in default:
            raise unknown_key_error(key, list(default.keys()), where)
        if key in validators:
            validators[key](value, f"{where}.{key}")
            continue
        if key in open_keys:
            continue
        if isinstance(value, Mapping) and isinstance(default[key], Mapping):
            nested_open = tuple(_below(dict.fromkeys(open_keys), key))
            check_keys(default[key], value, f"{where}.{key}", nested_open, _below(validators, key))


def schema_validator(schema: Mapping, open_keys: tuple[str, ...] = ()) -> KeyValidator:
    """A validator for a pass-through dict: ``None`` or a dict whose keys are in ``schema`` (else ``KeyError``
    naming the nearest) and whose values have the types of ``schema``'s values (else ``TypeError``)."""

    def validate(value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"Config value '{where}' must be a dict (or None), got {value!r} ({type(value).__name__})")
        check_keys(schema, value, where, open_keys)
        check_value_types(schema, value, where, open_keys)

    return validate


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
    default: Mapping, user: Mapping | None, where: str, open_keys: tuple[str, ...] = (),
    validators: Mapping[str, KeyValidator] | None = None,
) -> EasyDict:
    """Merge ``user`` into ``default`` after checking that every user key exists in ``default`` (keys with a
    validator are checked by it; their values are merged as given)."""
    user = user or {}
    check_keys(default, user, where, open_keys, validators)
    return EasyDict(deep_merge(default, user))
