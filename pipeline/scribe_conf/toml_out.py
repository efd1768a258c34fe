"""TOML text of a configuration tree: what ``tomllib.loads`` reads back as the same tree.

Values are tables (dicts), arrays of tables (lists of dicts, written ``[[name]]``), and
strings, booleans, integers, finite floats or lists of those.  Comments may be attached to a
table: ``{COMMENTS: ["why"], ...}`` puts ``# why`` above its header (or at the top of the text
for the root).  Only what the importer writes is supported; anything else is a TypeError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

COMMENTS = "__comments__"

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML's basic strings need these escaped; every other control character goes as \uXXXX.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b"}


def dumps(tree: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _table(lines, tree, (), header=None)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(
    lines: list[str], table: Mapping[str, Any], path: tuple[str, ...], header: str | None
) -> None:
    for comment in table.get(COMMENTS, ()):
        lines.extend(f"# {text}" if text else "#" for text in comment.split("\n"))
    if header is not None:
        lines.append(header)
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if key == COMMENTS:
            continue
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        sub = (*path, key)
        name = ".".join(_key(k) for k in sub)
        if isinstance(value, Mapping):
            lines.append("")
            _table(lines, value, sub, f"[{name}]")
        else:
            for item in value:
                lines.append("")
                _table(lines, item, sub, f"[[{name}]]")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"TOML has no finite spelling of {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML value for {type(value).__name__}")


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            raise TypeError(f"a lone surrogate ({ord(char):#x}) has no TOML spelling")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
