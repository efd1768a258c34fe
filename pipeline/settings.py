"""Turning TOML tables and environment variables into the components' frozen dataclasses.

Every component owns a frozen dataclass with defaults (``ServerConfig``, ``JournalConfig``,
...).  This module fills one from a mapping, checking each key against the dataclass's field
types, so an invalid file fails at start with the key's full dotted name and the problem.
Nested dataclass fields are sub-tables.  Environment overrides use
``PIPELINE_<SECTION>__<KEY>`` (double underscores between levels), values parsed as the field's
type.

Relative paths: ``resolve_paths`` makes every relative ``Path`` in a built configuration
absolute against a base directory (the configuration file's), so that what a daemon opens does
not depend on where it was started.  Text from the environment or the command line arrives as
``WorkingDirectoryText`` instead, and a relative path in it is made absolute against the working
directory as it is converted, as users expect of a flag or a variable they type in a shell.

This is the one place where values are checked against their range, so that any configuration
that loads also runs:

* every float must be finite (TOML and the environment both spell ``nan`` and ``inf``, and a
  NaN interval or rate silently turns a check off or refuses every call);
* a field declares its range beside its type, with ``annotated_types``' markers::

      rate_burst_s: Annotated[float, Gt(0)] = 1.0
      port: Annotated[int, Interval(ge=1, le=65535)] = 9042

  (a third-party vocabulary, so that every package can declare ranges without importing the
  application);
* what only the dataclass can judge (one field against another) stays in its
  ``__post_init__``; a ``ValueError`` there that starts with a field's name is reported under
  that field's key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError, ConfigFileError

T = TypeVar("T")

ENV_PREFIX = "PIPELINE_"


def build(cls: type[T], data: Mapping[str, Any], key: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``key`` is the dotted name of the table."""
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"expected a table, got {type(data).__name__}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(_join(key, unknown[0]), f"unknown key (known: {known})")
    values = {name: convert(hints[name], value, _join(key, name)) for name, value in data.items()}
    for field_name, spec in fields.items():
        # A required key left out would otherwise surface as Python's own
        # "__init__() missing 1 required positional argument".
        required = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if required and field_name not in values:
            raise ConfigError(_join(key, field_name), "required, but not set")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        name, problem = _field_named_by(exc, fields)
        raise ConfigError(_join(key, name) if name else key, problem) from exc


def _field_named_by(exc: Exception, fields: Mapping[str, Any]) -> tuple[str | None, str]:
    """The field a ``__post_init__`` error is about (its ``field`` attribute, or the message's
    first word, as in "port must be ..." or "port: ..."), and the problem to report."""
    message = str(exc)
    named = getattr(exc, "field", None)
    if isinstance(named, str) and named.split(".")[0] in fields:
        return named, str(getattr(exc, "problem", message))
    first, colon, rest = message.partition(":")
    if colon and first in fields:
        return first, rest.strip()
    word = message.split(" ", 1)[0]
    return (word if word in fields else None), message


# annotated_types' bound attributes, how each is checked, and how it reads.
_BOUNDS = {
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
}


def bounds_of(metadata: Iterable[Any]) -> dict[str, Any]:
    """The bounds (``gt``, ``ge``, ``lt``, ``le``) declared by ``Annotated`` metadata."""
    found: dict[str, Any] = {}
    for marker in metadata:
        for name in _BOUNDS:
            limit = getattr(marker, name, None)
            if limit is not None:
                found[name] = limit
    return found


def _check_bounds(value: Any, metadata: Iterable[Any], key: str) -> None:
    bounds = bounds_of(metadata)
    if value is None or not bounds:
        return
    if all(_BOUNDS[name][0](value, limit) for name, limit in bounds.items()):
        return
    allowed = " and ".join(f"{_BOUNDS[name][1]} {limit}" for name, limit in bounds.items())
    raise ConfigError(key, f"must be {allowed}, got {value!r}")


def convert(hint: Any, value: Any, key: str) -> Any:
    """Check and convert one TOML value to the annotated type ``hint``."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        converted = convert(base, value, key)
        _check_bounds(converted, metadata, key)
        return converted
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return convert(option, value, key)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(key, " or ".join(errors))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected an array, got {type(value).__name__}")
        item = args[0]
        return tuple(convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, key)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in hint)
            raise ConfigError(key, f"{value!r} is not one of {allowed}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if hint is Path:
        if isinstance(value, WorkingDirectoryText):
            return absolute(Path(value), Path.cwd())
        if isinstance(value, str):
            return Path(value)
        raise ConfigError(key, f"expected a path string, got {value!r}")
    if hint is bytes:
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        raise ConfigError(key, f"expected a string, got {value!r}")
    if hint is Any:
        return value
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(key, f"unsupported value {value!r}")


class WorkingDirectoryText(str):
    """Text typed in a shell (an environment variable, a flag): as a path, relative to the
    working directory rather than to the configuration file."""

    __slots__ = ()


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; ``ConfigFileError`` when it cannot be read or parsed."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigFileError(path, "file not found") from None
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, f"invalid TOML: {exc}") from None


def parse_env_value(raw: str) -> Any:
    """Parse an environment value: TOML scalars (numbers, booleans, quoted strings) or text."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return WorkingDirectoryText(raw)
    if isinstance(value, str):
        return WorkingDirectoryText(value)
    # TOML dates and times (a directory named 2024-01-01, say) stay text.
    return value if isinstance(value, int | float | bool | list) else WorkingDirectoryText(raw)


def env_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The dotted key each ``PIPELINE_SECTION__KEY`` variable sets, and the variable's name."""
    keys: dict[str, str] = {}
    for name in environ:
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if all(path):
            keys[".".join(path)] = name
    return keys


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested tables from ``PIPELINE_SECTION__KEY=value`` variables."""
    tree: dict[str, Any] = {}
    for key, name in env_variables(environ).items():
        *sections, leaf = key.split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    key, "conflicts with another variable", f"environment variable {name}"
                )
        node[leaf] = parse_env_value(environ[name])
    return tree


def blamed_source(key: str, sources: Mapping[str, str]) -> str | None:
    """Which of ``sources`` (dotted key -> where it was set) an error about ``key`` is due to:
    the one that set ``key`` itself, or a key inside the table ``key`` names."""
    if key in sources:
        return sources[key]
    for set_key, source in sources.items():
        if set_key.startswith(key + ".") or set_key.startswith(key + "["):
            # Perhaps only a contributor (a table's cross-field check): say what it set.
            return f"{source} setting {set_key}"
    return None


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, other values replace)."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = value
    return merged


def to_table(obj: Any) -> Any:
    """A dataclass instance as plain TOML-like data (enums by value, paths and bytes as text)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_table(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "surrogateescape")
    if isinstance(obj, tuple | list):
        return [to_table(v) for v in obj]
    return obj


def absolute(path: Path, base: Path) -> Path:
    """``path`` against ``base`` (itself against the working directory), with ``..`` and ``.``
    folded as written: ``conf/../var`` is the ``var`` beside ``conf``, as its reader means."""
    return Path(os.path.normpath(os.path.join(Path.cwd(), base, path)))


def resolve_paths(obj: T, base: Path) -> T:
    """``obj`` (a dataclass, nested ones and tuples of them included) with every relative
    ``Path`` made absolute against ``base``."""
    return typing.cast(T, _resolved(obj, base))


def _resolved(obj: Any, base: Path) -> Any:
    if isinstance(obj, Path):
        return obj if obj.is_absolute() else absolute(obj, base)
    if type(obj) is tuple:
        items = tuple(_resolved(item, base) for item in obj)
        changed = any(new is not old for new, old in zip(items, obj, strict=True))
        return items if changed else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for spec in dataclasses.fields(obj):
            if spec.init:
                old = getattr(obj, spec.name)
                if (new := _resolved(old, base)) is not old:
                    changes[spec.name] = new
        return dataclasses.replace(obj, **changes) if changes else obj
    return obj


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
