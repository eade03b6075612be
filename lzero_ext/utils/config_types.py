"""Type checks of user config values against their defaults.

A value of the wrong type (``num_simulations="50"`` from a JSON override, ``max_steps=2.5``) otherwise fails deep
inside a component, minutes into a run, with a message such as ``'<' not supported between instances of 'str' and
'int'``. :func:`check_value_types` compares each user value with its default's type and names the full key path.
Ranges stay with the components that own the keys (they know what is valid).
"""
from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any


def _expected(default: Any) -> tuple[str, Any] | None:
    """(type name, predicate) a user value must satisfy, or None when any value is accepted."""
    if isinstance(default, bool):
        return "bool", lambda v: isinstance(v, bool)
    if isinstance(default, Integral):
        return "int", lambda v: isinstance(v, Integral) and not isinstance(v, bool)
    if isinstance(default, Real):
        return "number", lambda v: isinstance(v, Real) and not isinstance(v, bool)
    if isinstance(default, str):
        return "str", lambda v: isinstance(v, str)
    if isinstance(default, (list, tuple)):
        return "list", lambda v: isinstance(v, (list, tuple))
    if isinstance(default, Mapping):
        return "dict", lambda v: isinstance(v, Mapping)
    return None  # None defaults (optional values) and other objects: the owning component decides


def check_value_types(default: Mapping, user: Mapping, where: str, open_keys: tuple[str, ...] = ()) -> None:
    """Raise ``TypeError`` for a user value whose type differs from its default's (``None`` always passes).

    Unknown keys are left to :func:`lzero_ext.utils.config.check_keys`; ``open_keys`` (dotted, relative to
    ``where``) are free-form and not checked.
    """
    for key, value in user.items():
        if key not in default or key in open_keys or value is None:
            continue
        expected = _expected(default[key])
        if expected is None:
            continue
        name, accepts = expected
        if not accepts(value):
            raise TypeError(
                f"Config value '{where}.{key}' must be {name} (default: {default[key]!r}), got {value!r} "
                f"({type(value).__name__})"
            )
        if isinstance(value, Mapping):
            nested_open = tuple(k[len(key) + 1:] for k in open_keys if k.startswith(key + "."))
            check_value_types(default[key], value, f"{where}.{key}", nested_open)
