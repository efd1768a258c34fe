"""CQL column types as ``system_schema.columns`` spells them, and JSON values converted to them.

`parse_type("frozen<map<text, int>>")` gives a `CqlType` tree; `converter(kind)` a function from
a decoded JSON value (str, int, float, bool, list, dict) to the Python value the driver binds for
that column, raising `ConversionError` with the reason when the value does not fit.  Conversions
are strict where a silent change would corrupt data (no float into an int column, no number into
a text column) and lenient where the JSON spelling is the usual one (timestamps as epoch
milliseconds or ISO 8601 text, UUIDs and addresses as text, blobs as text or base64).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Converter = Callable[[Any], Any]

_COLLECTIONS = ("list", "set", "map", "tuple", "frozen")

_INT_RANGES = {
    "tinyint": 8,
    "smallint": 16,
    "int": 32,
    "bigint": 64,
    "counter": 64,
}


class ConversionError(ValueError):
    """A value does not fit a column type; the message says why."""


@dataclass(frozen=True)
class CqlType:
    """A parsed CQL type: ``name`` (``int``, ``map``, ...) and its parameters."""

    name: str
    params: tuple[CqlType, ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}<{', '.join(str(p) for p in self.params)}>"


def normalize(text: str) -> str:
    """A type's spelling for comparison: lower case, no spaces (``frozen<map<blob,blob>>``)."""
    return "".join(text.split()).lower()


def parse_type(text: str) -> CqlType:
    """Parse a type as system_schema spells it; raises `ConversionError` for what it cannot."""
    kind, rest = _parse(normalize(text))
    if rest:
        raise ConversionError(f"cannot parse CQL type {text!r}")
    return kind


def _parse(text: str) -> tuple[CqlType, str]:
    name_end = 0
    while name_end < len(text) and text[name_end] not in "<>,":
        name_end += 1
    name, rest = text[:name_end], text[name_end:]
    if not name:
        raise ConversionError(f"cannot parse CQL type near {text!r}")
    if not rest.startswith("<"):
        return CqlType(name), rest
    params: list[CqlType] = []
    rest = rest[1:]
    while True:
        param, rest = _parse(rest)
        params.append(param)
        if rest.startswith(","):
            rest = rest[1:]
            continue
        if rest.startswith(">"):
            return CqlType(name, tuple(params)), rest[1:]
        raise ConversionError(f"cannot parse CQL type near {text!r}")


def converter(kind: CqlType) -> Converter:
    """The function from a JSON value to what the driver binds for ``kind``."""
    if kind.name == "frozen":
        return converter(kind.params[0])
    if kind.name in ("list", "set"):
        item = converter(kind.params[0])
        container: Callable[[Any], Any] = list if kind.name == "list" else frozenset

        def convert_sequence(value: Any) -> Any:
            if not isinstance(value, list):
                raise ConversionError(f"expected an array for {kind}, got {_json_type(value)}")
            return container(item(v) for v in value)

        return convert_sequence
    if kind.name == "map":
        key, item = converter(kind.params[0]), converter(kind.params[1])

        def convert_map(value: Any) -> Any:
            if not isinstance(value, dict):
                raise ConversionError(f"expected an object for {kind}, got {_json_type(value)}")
            return {key(k): item(v) for k, v in value.items()}

        return convert_map
    if kind.name == "tuple":
        items = [converter(p) for p in kind.params]

        def convert_tuple(value: Any) -> Any:
            if not isinstance(value, list) or len(value) != len(items):
                raise ConversionError(f"expected an array of {len(items)} for {kind}")
            return tuple(c(v) for c, v in zip(items, value, strict=True))

        return convert_tuple
    scalar = _SCALARS.get(kind.name)
    if scalar is None:
        raise ConversionError(f"column type {kind} is not supported")
    return scalar


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ConversionError(f"expected a string, got {_json_type(value)}")


def _ascii(value: Any) -> str:
    text = _text(value)
    if not text.isascii():
        raise ConversionError("expected ASCII text")
    return text


def _integer(bits: int | None) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)  # 3.0 is how some encoders write 3
        else:
            raise ConversionError(f"expected an integer, got {_json_type(value)}")
        if bits is not None and not -(1 << (bits - 1)) <= number < (1 << (bits - 1)):
            raise ConversionError(f"{number} does not fit in {bits} bits")
        return number

    return convert


def _floating(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConversionError(f"expected a number, got {_json_type(value)}")
    return float(value)


def _decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConversionError(f"expected a number, got {_json_type(value)}")
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise ConversionError(f"{value!r} is not a decimal number") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConversionError(f"expected true or false, got {_json_type(value)}")


def _timestamp(value: Any) -> int:
    """Milliseconds since the epoch, from a number (ms) or ISO 8601 text."""
    if isinstance(value, bool):
        raise ConversionError("expected a timestamp, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConversionError(f"{value!r} is not an ISO 8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return int(moment.timestamp() * 1000)
    raise ConversionError(f"expected a timestamp, got {_json_type(value)}")


def _date(value: Any) -> datetime.date:
    try:
        return datetime.date.fromisoformat(_text(value))
    except ValueError:
        raise ConversionError(f"{value!r} is not an ISO 8601 date") from None


def _uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(_text(value))
    except ValueError:
        raise ConversionError(f"{value!r} is not a UUID") from None


def _timeuuid(value: Any) -> uuid.UUID:
    parsed = _uuid(value)
    if parsed.version != 1:
        raise ConversionError(f"{value!r} is not a time-based (version 1) UUID")
    return parsed


def _inet(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(_text(value)))
    except ValueError:
        raise ConversionError(f"{value!r} is not an IP address") from None


def _blob(value: Any) -> bytes:
    """Text as its UTF-8 bytes; ``{"base64": "..."}`` for arbitrary bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except binascii.Error:
            raise ConversionError("invalid base64") from None
    raise ConversionError(f"expected a string or {{'base64': ...}}, got {_json_type(value)}")


_SCALARS: dict[str, Converter] = {
    "text": _text,
    "varchar": _text,
    "ascii": _ascii,
    **{name: _integer(bits) for name, bits in _INT_RANGES.items() if name != "counter"},
    "varint": _integer(None),
    "float": _floating,
    "double": _floating,
    "decimal": _decimal,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "date": _date,
    "uuid": _uuid,
    "timeuuid": _timeuuid,
    "inet": _inet,
    "blob": _blob,
}
