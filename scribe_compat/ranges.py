"""Ranges declared in a dataclass's annotations (``annotated_types``), checked on construction.

The application's settings loader reads the same declarations and names the key of a value out
of range; ``check_declared_ranges`` holds them for anyone who builds a configuration directly.
(``journal.config`` has its own twin: neither package may import the other.)
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from typing import Annotated, Any

_COMPARISONS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def check_declared_ranges(instance: Any) -> None:
    """ValueError naming the field whose value is not a number of its type within every bound
    its annotation declares (an int is a float too, a bool is neither; NaN is within none)."""
    hints = typing.get_type_hints(type(instance), include_extras=True)
    for field in dataclasses.fields(instance):
        hint = hints[field.name]
        if typing.get_origin(hint) is not Annotated:
            continue
        base, *markers = typing.get_args(hint)
        value = getattr(instance, field.name)
        wanted = "a number" if base is float else "an integer"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{field.name} must be {wanted}, not {value!r}")
        if base is int and not isinstance(value, int):
            raise ValueError(f"{field.name} must be {wanted}, not {value!r}")
        for marker in markers:
            for bound, compare in _COMPARISONS.items():
                limit = getattr(marker, bound, None)
                if limit is not None and not compare(value, limit):
                    raise ValueError(f"{field.name} must be {bound} {limit}, not {value!r}")
