"""The ``mapping`` materializer: fields of JSON messages into the columns of a user's table.

``columns`` maps each column to a source: a dotted field path into the message (``user.id``,
``items.0.sku``), or one of the event's own values:

=====================  ==========================================  =====================
source                 value                                       column types
=====================  ==========================================  =====================
``@event_time``        the event time                              timestamp (ms), bigint
                                                                   (µs)
``@category``          the category (of its origin)                blob, text
``@original_category`` the category the client sent                blob, text
``@journal_id``        the origin journal's identity               uuid, text
``@partition``         the origin partition                        int, bigint
``@offset``            the origin offset                           bigint, varint
``@message``           the raw message                             blob, text
=====================  ==========================================  =====================

``constants`` gives columns a fixed value.  At start every column is checked against the live
table: it must exist, its type must be one a JSON value converts to (`cqltypes`), constants must
convert, and every primary-key column must have a source; a mismatch refuses to start with the
column and field named.  Per message: a missing field (or JSON ``null``) writes nothing to its
column (unset: no cell, no tombstone); a missing key field, a value of the wrong type, or a
message that is not a JSON object rejects the event (a dead letter naming field and column).

Write time: the event time, or ``timestamp_field`` read in ``timestamp_unit`` (``s``, ``ms`` or
``us``), to which the event's own time within that unit is added as a deterministic tie-break.
TTL: ``ttl_s``, or ``ttl_field`` (seconds) where the message has it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.sinks.cassandra.cqltypes import ConversionError, converter, parse_type
from consumers.sinks.cassandra.events import MAX_TTL_S, TtlS
from consumers.sinks.cassandra.jsonfields import MISSING, NotJson, lookup, parse_object, parse_path
from consumers.sinks.cassandra.model import (
    BaseMaterializer,
    Event,
    LiveTable,
    Materialized,
    MaterializerError,
    Rejected,
    Row,
)
from consumers.sinks.cassandra.naming import check_name

_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError("is not UTF-8 text") from None


# Each special source: the types it may fill, and the value per type.
_SPECIALS: dict[str, dict[str, Callable[[Event], Any]]] = {
    "@event_time": {"timestamp": lambda e: e.time_us // 1000, "bigint": lambda e: e.time_us},
    "@category": {"blob": lambda e: e.category, "text": lambda e: _text_of(e.category)},
    "@original_category": {
        "blob": lambda e: e.original_category,
        "text": lambda e: _text_of(e.original_category),
    },
    "@journal_id": {"uuid": lambda e: e.journal_id, "text": lambda e: str(e.journal_id)},
    "@partition": {"int": lambda e: e.partition, "bigint": lambda e: e.partition},
    "@offset": {"bigint": lambda e: e.offset, "varint": lambda e: e.offset},
    "@message": {"blob": lambda e: e.message, "text": lambda e: _text_of(e.message)},
}
_SPECIALS["@event_time"]["varchar"] = _SPECIALS["@event_time"]["bigint"]
for _source in _SPECIALS.values():
    if "text" in _source:
        _source["varchar"] = _source["text"]


@dataclass(frozen=True)
class MappingOptions:
    """``[consumers.cassandra]`` of a group with ``materializer = "mapping"``."""

    table: str
    # column -> a dotted field path, or an @-source (see the module docstring).
    columns: dict[str, str] = field(default_factory=dict)
    # column -> a fixed value.
    constants: dict[str, Any] = field(default_factory=dict)
    ttl_s: TtlS = 0
    ttl_field: str | None = None
    timestamp_field: str | None = None
    timestamp_unit: str = "ms"

    def __post_init__(self) -> None:
        check_name("table", self.table)
        if not self.columns:
            raise ValueError("columns: map at least one column to a field")
        for column, source in self.columns.items():
            check_name(f"columns.{column}", column)
            if not isinstance(source, str):
                raise ValueError(f"columns.{column}: expected a field path, got {source!r}")
            if source.startswith("@"):
                if source not in _SPECIALS:
                    known = ", ".join(sorted(_SPECIALS))
                    raise ValueError(f"columns.{column}: unknown source {source!r} ({known})")
            else:
                try:
                    parse_path(source)
                except ValueError as exc:
                    raise ValueError(f"columns.{column}: {exc}") from None
        for column in self.constants:
            check_name(f"constants.{column}", column)
            if column in self.columns:
                raise ValueError(f"constants.{column}: the column also has a field in columns")
        for name in ("ttl_field", "timestamp_field"):
            path = getattr(self, name)
            if path is not None:
                try:
                    parse_path(path)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        if self.timestamp_unit not in _UNITS:
            raise ValueError(f"timestamp_unit must be s, ms or us, got {self.timestamp_unit!r}")


@dataclass(frozen=True)
class _FieldColumn:
    column: str
    field: str
    path: tuple[str, ...]
    convert: Callable[[Any], Any]
    key: bool


class MappingMaterializer(BaseMaterializer):
    """Maps JSON fields to ``options.table``'s columns; see the module docstring."""

    name = "mapping"

    def __init__(self, options: MappingOptions) -> None:
        self.options = options
        self._fields: list[_FieldColumn] = []
        self._specials: list[tuple[str, Callable[[Event], Any]]] = []
        self._constants: dict[str, Any] = {}
        self._ttl_path = parse_path(options.ttl_field) if options.ttl_field else None
        self._ts_path = parse_path(options.timestamp_field) if options.timestamp_field else None
        self._unit = _UNITS[options.timestamp_unit]
        self._checked = False

    def writes(self) -> Sequence[str]:
        return (self.options.table,)

    def check(self, tables: Mapping[str, LiveTable]) -> None:
        """Fit the mapping to the live table (see the module docstring)."""
        table = self.options.table
        live = tables.get(table)
        if live is None:
            raise MaterializerError(f"table {table!r} does not exist: create it first")
        key_columns = set(live.primary_key)
        mapped = set(self.options.columns) | set(self.options.constants)
        for column in sorted(mapped - set(live.columns)):
            raise MaterializerError(f"column {column!r} is not a column of table {table!r}")
        for column in live.primary_key:
            if column not in mapped:
                raise MaterializerError(
                    f"key column {column!r} of table {table!r} has no field in columns"
                )
        self._fields, self._specials, self._constants = [], [], {}
        for column, source in self.options.columns.items():
            kind = live.columns[column]
            if source.startswith("@"):
                by_type = _SPECIALS[source]
                getter = by_type.get(kind)
                if getter is None:
                    allowed = ", ".join(sorted(by_type))
                    raise MaterializerError(
                        f"column {column!r} is {kind}: {source} fills only {allowed}"
                    )
                self._specials.append((column, getter))
                continue
            try:
                convert = converter(parse_type(kind))
            except ConversionError as exc:
                raise MaterializerError(f"field {source!r} -> column {column!r}: {exc}") from None
            self._fields.append(
                _FieldColumn(column, source, parse_path(source), convert, column in key_columns)
            )
        for column, value in self.options.constants.items():
            try:
                self._constants[column] = converter(parse_type(live.columns[column]))(value)
            except ConversionError as exc:
                raise MaterializerError(
                    f"constant for column {column!r} ({live.columns[column]}): {exc}"
                ) from None
        self._checked = True

    def materialize(self, events: Sequence[Event]) -> Materialized:
        if not self._checked:
            raise MaterializerError("mapping used before check() saw the table")
        out = Materialized()
        for event in events:
            try:
                out.rows.append(self._row(event))
            except (NotJson, ConversionError, ValueError) as exc:
                out.rejected.append(Rejected(event, str(exc)))
        return out

    def _row(self, event: Event) -> Row:
        document = parse_object(event.message)
        values = dict(self._constants)
        for column, getter in self._specials:
            try:
                values[column] = getter(event)
            except ConversionError as exc:
                raise ConversionError(f"column {column!r}: the event's value {exc}") from None
        for spec in self._fields:
            value = lookup(document, spec.path)
            if value is MISSING:
                if spec.key:
                    raise ValueError(
                        f"field {spec.field!r} for key column {spec.column!r} is missing"
                    )
                continue
            try:
                values[spec.column] = spec.convert(value)
            except ConversionError as exc:
                raise ConversionError(
                    f"field {spec.field!r} -> column {spec.column!r}: {exc}"
                ) from None
        return Row(
            self.options.table, values, self._timestamp(document, event), event, self._ttl(document)
        )

    def _timestamp(self, document: dict[str, Any], event: Event) -> int:
        if self._ts_path is None:
            return event.time_us
        value = lookup(document, self._ts_path)
        if value is MISSING:
            return event.time_us
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConversionError(
                f"field {self.options.timestamp_field!r} is not a timestamp in "
                f"{self.options.timestamp_unit}: {value!r}"
            )
        unit = self._unit
        micros = int(value * unit)
        if micros % unit == 0:
            micros += event.time_us % unit  # deterministic tie-break within one unit
        return micros

    def _ttl(self, document: dict[str, Any]) -> int:
        if self._ttl_path is None:
            return self.options.ttl_s
        value = lookup(document, self._ttl_path)
        if value is MISSING:
            return self.options.ttl_s
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TTL_S:
            raise ConversionError(
                f"field {self.options.ttl_field!r} is not a TTL in seconds (0..{MAX_TTL_S}): "
                f"{value!r}"
            )
        return value
