"""Serializing bound values for prepared statements, without the driver's `BoundStatement`.

The driver's ``PreparedStatement.bind`` costs about 8 µs for a nine-column row (it builds a
descriptor per value and tries conversions by catching exceptions), which is most of a bulk
writer's CPU.  A `RowSerializer` does the same work with one function per column, chosen once
from the column's CQL type: the values the pipeline writes (``bytes``, ``int``, ``str``,
``float``, ``uuid.UUID``) take a direct path, every other value goes through the column type's
own ``serialize``, so what is accepted or refused, and the bytes sent, are the driver's.

This module only sees the column types the driver gives (``typename`` and ``serialize``); it
does not import the driver.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any

Serialize = Callable[[Any], Any]

_INT32 = struct.Struct(">i").pack
_INT64 = struct.Struct(">q").pack
_DOUBLE = struct.Struct(">d").pack


def _same(value: bytes) -> bytes:
    return value


def _utf8(value: str) -> bytes:
    return value.encode("utf-8")


def _uuid_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


# CQL type name -> (the Python type taking the direct path, how it is serialized).  Each
# matches what the driver's type does with that Python type.
_DIRECT: dict[str, tuple[type, Callable[[Any], bytes]]] = {
    "blob": (bytes, _same),
    "int": (int, _INT32),
    "bigint": (int, _INT64),
    "counter": (int, _INT64),
    "timestamp": (int, _INT64),  # milliseconds since the epoch
    "text": (str, _utf8),
    "varchar": (str, _utf8),
    "double": (float, _DOUBLE),
    "uuid": (uuid.UUID, _uuid_bytes),
    "timeuuid": (uuid.UUID, _uuid_bytes),
}


def column_serializer(cql_type: Any, protocol_version: int) -> Serialize:
    """A function serializing one non-null value of the driver's column type ``cql_type``."""

    def general(value: Any) -> Any:
        return cql_type.serialize(value, protocol_version)

    direct = _DIRECT.get(getattr(cql_type, "typename", ""))
    if direct is None:
        return general
    exact, pack = direct

    def serialize(value: Any) -> Any:
        # Exactly the type (a bool is an int to isinstance, and the driver packs it as one).
        return pack(value) if type(value) is exact else general(value)

    return serialize


class UnfitValueError(ValueError):
    """A value that does not fit its column: ``index`` names the column by position."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class RowSerializer:
    """Serializes a row of values for one prepared statement's bind markers, in order.

    ``None`` stays ``None`` (a null) and ``unset`` stays itself (no cell); a value of the wrong
    type raises `UnfitValueError` with the column's position.
    """

    __slots__ = ("_columns", "_unset")

    def __init__(self, cql_types: Sequence[Any], protocol_version: int, unset: object) -> None:
        self._columns = tuple(column_serializer(t, protocol_version) for t in cql_types)
        self._unset = unset

    def __len__(self) -> int:
        return len(self._columns)

    def __call__(self, values: Sequence[Any]) -> list[Any]:
        columns = self._columns
        if len(values) != len(columns):
            raise ValueError(f"{len(values)} values for {len(columns)} bind markers")
        unset = self._unset
        try:
            return [
                value if value is None or value is unset else serialize(value)
                for serialize, value in zip(columns, values, strict=True)
            ]
        except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
            return self._slowly(values)

    def _slowly(self, values: Sequence[Any]) -> list[Any]:
        """Again, one value at a time, to name the column at fault."""
        out = []
        for index, (serialize, value) in enumerate(zip(self._columns, values, strict=True)):
            if value is None or value is self._unset:
                out.append(value)
                continue
            try:
                out.append(serialize(value))
            except (TypeError, ValueError, OverflowError, AttributeError, struct.error) as exc:
                raise UnfitValueError(index, exc) from exc
        return out
