"""Fields of JSON messages by path: ``user.id``, ``items.0.sku`` (a number indexes an array)."""

from __future__ import annotations

import json
from typing import Any, Final

MISSING: Final[Any] = object()


class NotJson(ValueError):  # noqa: N818 (a reason, not a failure of ours)
    """The message is not a JSON object."""


def parse_path(path: str) -> tuple[str, ...]:
    """Split a dotted path; raises ValueError for an empty one or an empty step."""
    steps = tuple(path.split("."))
    if not path or not all(steps):
        raise ValueError(f"{path!r} is not a field path (names separated by dots)")
    return steps


def lookup(document: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``, or `MISSING`; JSON ``null`` counts as missing."""
    value = document
    for step in path:
        if isinstance(value, dict):
            value = value.get(step, MISSING)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return MISSING if value is None else value


def parse_object(message: bytes) -> dict[str, Any]:
    """The message as a JSON object; raises `NotJson` saying why not."""
    try:
        document = json.loads(message)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotJson(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise NotJson("JSON message is not an object")
    return document
