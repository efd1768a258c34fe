"""The materializers are pure: plain events in, rows and rejections out, no driver in sight."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.origin import ORIGIN_KEY, Origin, decode_origin
from consumers.sinks.cassandra import (
    Event,
    EventsMaterializer,
    EventsOptions,
    LatestMaterializer,
    LatestOptions,
    LiveTable,
    MappingMaterializer,
    MappingOptions,
    MaterializerError,
    PluginError,
    build_plugin,
)
from consumers.sinks.cassandra.cqltypes import ConversionError, converter, parse_type
from consumers.sinks.cassandra.events import twcs
from consumers.sinks.cassandra.schema import problems

JOURNAL = uuid.UUID("00000000-0000-4000-8000-000000000001")
BASE_US = 1_795_000_000_123_456
CONF = Path(__file__).parents[2] / "conf"


def event(offset: int, message: bytes, *, time_us: int | None = None, **fields: Any) -> Event:
    return Event(
        category=fields.pop("category", b"app"),
        journal_id=JOURNAL,
        partition=fields.pop("partition", 0),
        offset=offset,
        time_us=BASE_US + offset if time_us is None else time_us,
        message=message,
        metadata=fields.pop("metadata", None),
    )


events_strategy = st.lists(
    st.tuples(
        st.binary(max_size=64),
        st.none() | st.dictionaries(st.binary(max_size=8), st.binary(max_size=8), max_size=3),
    ),
    max_size=40,
).map(lambda items: [event(i, m, metadata=md) for i, (m, md) in enumerate(items)])


# -- events ----------------------------------------------------------------------------------


@given(events_strategy)
def test_events_replaying_a_batch_yields_the_same_rows_with_unique_keys(
    events: list[Event],
) -> None:
    materializer = EventsMaterializer(EventsOptions())
    first, again = materializer.materialize(events), materializer.materialize(list(events))
    assert first.rows == again.rows and not first.rejected
    spec = materializer.tables()[0]
    key = [*spec.partition_key, *(name for name, _ in spec.clustering)]
    keys = [tuple(row.values[c] for c in key) for row in first.rows]
    assert len(set(keys)) == len(events)
    assert [row.timestamp_us for row in first.rows] == [e.time_us for e in events]


def test_events_rows_bucket_by_hour_and_keep_metadata() -> None:
    materializer = EventsMaterializer(EventsOptions(bucket_s=3600, ttl_s=600))
    rows = materializer.materialize([event(0, b"a", metadata={b"k": b"v"}), event(1, b"b")]).rows
    time_ms = (BASE_US + 0) // 1000
    assert rows[0].values["bucket"] == time_ms - time_ms % 3_600_000
    assert rows[0].values["event_time"] == time_ms
    assert rows[0].values["metadata"] == {b"k": b"v"}
    assert "metadata" not in rows[1].values  # unset: no cell, no tombstone
    assert rows[0].ttl_s == 600


def test_events_with_a_ttl_use_time_window_compaction() -> None:
    assert dict(twcs(30 * 86400)) == {
        "class": "TimeWindowCompactionStrategy",
        "compaction_window_unit": "DAYS",
        "compaction_window_size": "1",
    }
    assert dict(twcs(60 * 3600))["compaction_window_size"] == "2"
    assert dict(twcs(600))["compaction_window_unit"] == "MINUTES"
    cql = EventsMaterializer(EventsOptions(ttl_s=86400)).tables()[0].create_cql("ks")
    assert "TimeWindowCompactionStrategy" in cql
    assert "PRIMARY KEY ((category, bucket), event_time, journal_id, partition, offset)" in cql


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"table": "Events"}, "table"),
        ({"table": "1events"}, "table"),
    ],
)
def test_events_options_are_checked(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EventsOptions(**options)


# -- latest ----------------------------------------------------------------------------------


def test_latest_keys_from_a_json_field_or_before_a_delimiter() -> None:
    by_field = LatestMaterializer(LatestOptions(key_field="host.name"))
    out = by_field.materialize(
        [
            event(0, b'{"host": {"name": "web-1"}}'),
            event(1, b'{"host": {"name": 7}}'),
            event(2, b'{"host": {}}'),
            event(3, b"not json"),
            event(4, b'{"host": {"name": ["x"]}}'),
        ]
    )
    assert [row.values["key"] for row in out.rows] == [b"web-1", b"7"]
    assert [(r.event.offset, r.reason.split(":")[0]) for r in out.rejected] == [
        (2, "message has no key field 'host.name'"),
        (3, "not valid JSON"),
        (4, "key field 'host.name' is not a scalar"),
    ]
    by_delimiter = LatestMaterializer(LatestOptions(key_delimiter=":"))
    out = by_delimiter.materialize([event(0, b"k1:v"), event(1, b"no delimiter")])
    assert [row.values["key"] for row in out.rows] == [b"k1"]
    assert out.rejected[0].reason == "message has no key delimiter ':'"


def test_latest_writes_every_column_at_the_event_time() -> None:
    materializer = LatestMaterializer(LatestOptions(key_delimiter=" "))
    (row,) = materializer.materialize([event(3, b"k v", time_us=BASE_US + 17)]).rows
    assert row.timestamp_us == BASE_US + 17
    assert row.values["metadata"] == {}  # written, so an older event's metadata cannot linger
    assert (row.values["journal_id"], row.values["partition"], row.values["offset"]) == (
        JOURNAL,
        0,
        3,
    )


def test_latest_needs_exactly_one_key_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LatestOptions()
    with pytest.raises(ValueError, match="exactly one"):
        LatestOptions(key_field="a", key_delimiter=":")


# -- mapping ---------------------------------------------------------------------------------

LOGINS = LiveTable(
    "logins",
    {
        "user_id": "bigint",
        "at": "timestamp",
        "name": "text",
        "ok": "boolean",
        "tags": "frozen<set<text>>",
        "source": "text",
        "raw": "blob",
        "hits": "counter",
    },
    partition_key=("user_id",),
    clustering=("at",),
)


def mapping(**options: Any) -> MappingMaterializer:
    columns = options.pop("columns", {"user_id": "user.id", "at": "@event_time", "name": "name"})
    materializer = MappingMaterializer(MappingOptions(table="logins", columns=columns, **options))
    materializer.check({"logins": LOGINS})
    return materializer


def test_mapping_converts_fields_and_leaves_missing_ones_unset() -> None:
    materializer = mapping(
        columns={"user_id": "user.id", "at": "@event_time", "name": "name", "tags": "tags"},
        constants={"source": "web"},
    )
    out = materializer.materialize(
        [
            event(0, json.dumps({"user": {"id": 5}, "name": "ann", "tags": ["a"]}).encode()),
            event(1, json.dumps({"user": {"id": 6}, "name": None}).encode()),
            event(2, json.dumps({"user": {"id": "x"}}).encode()),
            event(3, json.dumps({"name": "no id"}).encode()),
            event(4, b"[]"),
        ]
    )
    assert [row.values for row in out.rows] == [
        {
            "source": "web",
            "at": (BASE_US + 0) // 1000,
            "user_id": 5,
            "name": "ann",
            "tags": frozenset({"a"}),
        },
        {"source": "web", "at": (BASE_US + 1) // 1000, "user_id": 6},
    ]
    reasons = {r.event.offset: r.reason for r in out.rejected}
    assert reasons[2] == "field 'user.id' -> column 'user_id': expected an integer, got a string"
    assert reasons[3] == "field 'user.id' for key column 'user_id' is missing"
    assert reasons[4] == "JSON message is not an object"


def test_mapping_timestamps_and_ttls_from_fields() -> None:
    materializer = mapping(timestamp_field="ts", timestamp_unit="ms", ttl_field="ttl", ttl_s=60)
    rows = materializer.materialize(
        [
            event(0, b'{"user": {"id": 1}, "ts": 1700000000000, "ttl": 5}'),
            event(1, b'{"user": {"id": 1}}'),
        ]
    ).rows
    # A whole-millisecond time gets the event's own microsecond as a deterministic tie-break.
    assert rows[0].timestamp_us == 1_700_000_000_000_000 + (BASE_US % 1000)
    assert rows[0].ttl_s == 5
    assert rows[1].timestamp_us == BASE_US + 1 and rows[1].ttl_s == 60


@pytest.mark.parametrize(
    ("columns", "constants", "match"),
    [
        ({"user_id": "u"}, {}, "key column 'at' of table 'logins' has no field"),
        ({"user_id": "u", "at": "a", "nope": "x"}, {}, "column 'nope' is not a column"),
        ({"user_id": "u", "at": "@category"}, {}, "column 'at' is timestamp: @category fills"),
        ({"user_id": "u", "at": "a", "hits": "h"}, {}, "column type counter is not supported"),
        ({"user_id": "u", "at": "a"}, {"ok": "yes"}, "constant for column 'ok'"),
    ],
)
def test_mapping_check_names_field_and_column(
    columns: dict[str, str], constants: dict[str, Any], match: str
) -> None:
    materializer = MappingMaterializer(
        MappingOptions(table="logins", columns=columns, constants=constants)
    )
    with pytest.raises(MaterializerError, match=match):
        materializer.check({"logins": LOGINS})


def test_mapping_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown source '@nope'"):
        MappingOptions(table="t", columns={"a": "@nope"})
    with pytest.raises(ValueError, match=r"columns\.a"):
        MappingOptions(table="t", columns={"a": "x..y"})
    with pytest.raises(ValueError, match="timestamp_unit"):
        MappingOptions(table="t", columns={"a": "x"}, timestamp_unit="ns")
    with pytest.raises(ValueError, match=r"constants\.a"):
        MappingOptions(table="t", columns={"a": "x"}, constants={"a": 1})


# -- CQL types -------------------------------------------------------------------------------


def test_cql_types_parse_and_convert() -> None:
    kind = parse_type("frozen<map<text, frozen<list<int>>>>")
    assert str(kind) == "frozen<map<text, frozen<list<int>>>>"
    assert converter(kind)({"a": [1, 2]}) == {"a": [1, 2]}
    assert converter(parse_type("timestamp"))("2026-12-01T00:00:00Z") == 1_796_083_200_000
    assert converter(parse_type("blob"))({"base64": "AAE="}) == b"\x00\x01"
    assert converter(parse_type("int"))(3.0) == 3
    for kind_text, value in [
        ("int", 1 << 40),
        ("int", 1.5),
        ("text", 5),
        ("boolean", 1),
        ("uuid", "nope"),
        ("inet", "999.1.1.1"),
        ("timeuuid", str(uuid.uuid4())),
    ]:
        with pytest.raises(ConversionError):
            converter(parse_type(kind_text))(value)


# -- origin ----------------------------------------------------------------------------------


@given(
    st.uuids(),
    st.binary(max_size=40),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**62),
)
def test_origin_round_trips_any_category(
    journal_id: uuid.UUID, category: bytes, partition: int, offset: int, time_us: int
) -> None:
    origin = Origin(journal_id, category, partition, offset, time_us)
    assert decode_origin(origin.encode()) == origin


@pytest.mark.parametrize(
    "value",
    [b"", b"2 " + b"0" * 32 + b" 1 2 3 c", b"1 zz 1 2 3 c", b"1 " + b"0" * 32 + b" -1 2 3 c"],
)
def test_unreadable_origins_are_ignored(value: bytes) -> None:
    assert decode_origin(value) is None


def test_origin_key_is_what_the_forward_sink_writes() -> None:
    assert ORIGIN_KEY == b"scribe_origin"


# -- schema comparison -----------------------------------------------------------------------


def test_schema_problems_name_table_column_and_key() -> None:
    spec = EventsMaterializer(EventsOptions()).tables()[0]
    live = LiveTable(
        "events",
        {name: kind for name, kind in spec.columns if name != "metadata"} | {"offset": "int"},
        partition_key=("category",),
        clustering=("bucket", "event_time", "journal_id", "partition", "offset"),
    )
    assert problems([spec], {"events": live}) == [
        "table 'events': column 'offset' is int, expected bigint",
        "table 'events': column 'metadata' (frozen<map<blob, blob>>) is missing",
        "table 'events': primary key is ((category), bucket, event_time, journal_id, partition,"
        " offset), expected ((category, bucket), event_time, journal_id, partition, offset)",
    ]
    assert problems([spec], {}) == ["table 'events' does not exist"]


# -- plugins ---------------------------------------------------------------------------------


def test_the_example_plugin_loads_and_materializes() -> None:
    plugin = build_plugin(
        "access_log:AccessLogMaterializer", {"bucket_s": 60}, plugin_path=CONF / "plugins"
    )
    line = b'203.0.113.9 - ann [01/Dec/2026:21:00:07 +0000] "GET /a?b HTTP/1.1" 503 512'
    out = plugin.materialize([event(0, line), event(1, b"garbage"), event(2, line[:-3] + b"-")])
    assert [(r.values["status"], r.values["path"], r.values.get("bytes")) for r in out.rows] == [
        (503, "/a?b", 512),
        (503, "/a?b", None),
    ]
    assert out.rows[0].values["user_name"] == "ann"
    assert out.rows[0].timestamp_us == BASE_US  # the event's time, not the line's
    assert out.rejected[0].reason == "not a Common Log Format line"
    assert plugin.writes() == ("http_requests",)


def test_plugin_errors_are_clear() -> None:
    with pytest.raises(PluginError, match=r"'package\.module:ClassName'"):
        build_plugin("nocolon", {})
    with pytest.raises(PluginError, match="cannot import 'no_such_module_here'"):
        build_plugin("no_such_module_here:X", {})
    with pytest.raises(PluginError, match="unknown option 'colour'"):
        build_plugin("access_log:AccessLogMaterializer", {"colour": 1}, CONF / "plugins")
    with pytest.raises(PluginError, match="does not implement the materializer protocol"):
        build_plugin("collections:OrderedDict", {})
    assert str(CONF / "plugins") in sys.path


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letters_read_back_failure_times_as_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datetime
    import time

    from consumers.sinks.cassandra.deadletters import _from_row

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        row = ("g", b"c", JOURNAL, 0, 1, 5, "m", "e", b"x", None, datetime.datetime(2026, 12, 1))
        assert _from_row(row).failed_at_ms == 1_796_083_200_000
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_dead_letters_cut_huge_messages_and_say_so() -> None:
    from consumers.sinks.cassandra.deadletters import MAX_KEPT_MESSAGE_BYTES, values

    row = values("g", "events", event(0, b"x" * (MAX_KEPT_MESSAGE_BYTES + 1)), "too big", 1)
    assert len(row["message"]) == MAX_KEPT_MESSAGE_BYTES
    assert row["error"] == f"too big (message of {MAX_KEPT_MESSAGE_BYTES + 1} bytes cut to 4194304)"
