"""Typed dataclasses from plain mappings: the checking behind every config and method option.

:func:`from_dict` builds a (nested) dataclass from a mapping, refusing unknown keys (it lists the
valid ones) and values of the wrong type (it names the key, the value and what is expected), in the
one message style of :func:`bad_value`. It sits below :mod:`cosam.config` and
:mod:`cosam.methods`, both of which parse their options with it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import typing
from typing import Any, Dict, List, Mapping, Union

from .errors import ConfigError

__all__ = ["bad_value", "check_fields", "describe", "field_names", "from_dict"]


def field_names(cls: type) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def describe(hint: Any) -> str:
    """What a type annotation accepts, in the words of an error message."""
    if hint is Any:
        return "any value"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return (
            f"a list of {describe(args[0]).replace('an ', '').replace('a ', '')}s"
            if args
            else "a list"
        )
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return getattr(hint, "__name__", str(hint))


_UNCHECKED = object()


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` if it has type ``hint`` (ints are accepted, as floats, where floats are expected),
    else ``_UNCHECKED``. Annotations this does not know accept anything."""
    if hint is Any:
        return value
    if hint is bool:
        return value if isinstance(value, bool) else _UNCHECKED
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _UNCHECKED
    if hint is float:
        return (
            float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else _UNCHECKED
        )
    if hint is str:
        return value if isinstance(value, str) else _UNCHECKED
    if hint is type(None):
        return value if value is None else _UNCHECKED
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        for a in args:
            out = _coerce(value, a)
            if out is not _UNCHECKED:
                return out
        return _UNCHECKED
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return _UNCHECKED
        items = [_coerce(v, args[0]) if args else v for v in value]
        return _UNCHECKED if any(v is _UNCHECKED for v in items) else items
    if origin in (dict, collections.abc.Mapping):
        return value if isinstance(value, Mapping) else _UNCHECKED
    if origin is typing.Literal:
        return value if value in args else _UNCHECKED
    return value


def _field_hints(cls: type) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved is not checked
        return {}


def bad_value(key: str, value: Any, expected: str) -> ConfigError:
    """The one message style of a bad config value: it names the key, the value and what is valid."""
    return ConfigError(
        f"invalid config value {key}={json.dumps(value) if _jsonable(value) else repr(value)}; "
        f"expected {expected}"
    )


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def from_dict(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursively.

    Unknown keys raise ConfigError listing the valid ones; a value whose type does not match its
    field's annotation (int, float, bool, str, Optional, List, Union, Literal) raises ConfigError
    naming the key, the value and the expected type. An int is accepted (and stored as a float)
    where a float is expected; a bool is never taken for a number nor a string for a bool.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"config section {where or cls.__name__!r} must be a mapping, got {type(values).__name__}"
        )
    names = field_names(cls)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(repr(where + k) for k in unknown)}; "
            f"valid keys{' in ' + where.rstrip('.') if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    types = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_hints(cls)
    for k, v in values.items():
        default = (
            types[k].default_factory()
            if types[k].default_factory is not dataclasses.MISSING
            else types[k].default
        )  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            kwargs[k] = from_dict(type(default), v, where=f"{where}{k}.")
            continue
        hint = hints.get(k, Any)
        checked = _coerce(v, hint)
        if checked is _UNCHECKED:
            raise bad_value(where + k, v, describe(hint))
        kwargs[k] = checked
    return cls(**kwargs)


def check_fields(obj: Any, where: str = "") -> None:
    """Re-check the types of a dataclass built in code (which skipped :func:`from_dict`),
    recursively; the first bad value raises :func:`bad_value`'s ConfigError."""
    hints = _field_hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            check_fields(v, f"{where}{f.name}.")
        elif _coerce(v, hints.get(f.name, Any)) is _UNCHECKED:
            raise bad_value(where + f.name, v, describe(hints.get(f.name, Any)))
