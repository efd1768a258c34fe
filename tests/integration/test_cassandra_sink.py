"""The Cassandra sink and its built-in materializers against the real Cassandra."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from consumers.cassandra import CassandraConfig, CassandraSession
from consumers.errors import SchemaMismatch
from consumers.origin import ORIGIN_KEY, Origin
from consumers.sinks.base import SinkError
from consumers.sinks.cassandra import (
    BaseMaterializer,
    CassandraSink,
    Event,
    EventsMaterializer,
    EventsOptions,
    LatestMaterializer,
    LatestOptions,
    MappingMaterializer,
    MappingOptions,
    Materialized,
    Row,
    TableSpec,
    list_dead_letters,
)
from journal import JournalMessage, PartitionId

pytestmark = pytest.mark.integration

JOURNAL = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER_JOURNAL = uuid.UUID("00000000-0000-4000-8000-000000000002")
BASE_US = 1_795_000_000_000_000


def messages(
    count: int, *, start: int = 0, body: bytes = b"event-%d", first_us: int = BASE_US
) -> list[JournalMessage]:
    out = []
    for offset in range(start, start + count):
        time_us = first_us + offset
        out.append(
            JournalMessage(
                offset, time_us // 1000, body.replace(b"%d", b"%d" % offset), None, time_us
            )
        )
    return out


async def rows(session: CassandraSession, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return list((await session.execute(query, params or None)).rows)


def sink(
    session: CassandraSession, config: CassandraConfig, materializer: Any, **kwargs: Any
) -> CassandraSink:
    return CassandraSink(
        session,
        materializer,
        group=kwargs.pop("group", "g"),
        journal_id=kwargs.pop("journal_id", JOURNAL),
        config=config,
        **kwargs,
    )


async def test_events_rows_are_written_once_whatever_is_replayed(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    events = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions()))
    done = await events.start()
    assert any("created" in line and ".events" in line for line in done)
    pid = PartitionId(b"app", 0)
    batch = messages(250)
    await events.write(pid, batch)
    query = (
        "SELECT offset, message, writetime(message), event_time FROM events"
        " WHERE category = %s AND bucket = %s"
    )
    bucket = BASE_US // 1000 - BASE_US // 1000 % 3_600_000
    first = await rows(cassandra, query, b"app", bucket)
    assert [r[0] for r in first] == list(range(250))
    assert [bytes(r[1]) for r in first] == [m.message for m in batch]
    assert [r[2] for r in first] == [m.timestamp_us for m in batch]
    # Replaying any range, in any batching, changes nothing.
    await events.write(pid, batch[100:180])
    await events.write(pid, batch)
    assert await rows(cassandra, query, b"app", bucket) == first
    metrics = events.metrics()
    assert metrics["rows written"] == 250 + 80 + 250
    assert metrics["dead letters"] == 0
    # Rows of one partition key go out in batches of at most max_batch_rows.
    assert metrics["batches"] == 3 + 1 + 3


async def test_two_journals_never_overwrite_each_other(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    one = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions()))
    two = sink(
        cassandra, cassandra_config, EventsMaterializer(EventsOptions()), journal_id=OTHER_JOURNAL
    )
    await one.start()
    await two.start()
    pid = PartitionId(b"app", 0)
    await one.write(pid, messages(10, body=b"one-%d"))
    await two.write(pid, messages(10, body=b"two-%d"))
    found = await rows(cassandra, "SELECT journal_id, offset, message FROM events")
    assert len(found) == 20
    assert {(j, bytes(m)[:3]) for j, _, m in found} == {(JOURNAL, b"one"), (OTHER_JOURNAL, b"two")}


async def test_forwarded_events_keep_their_origin_identity(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    leaf = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions()))
    aggregator = sink(
        cassandra, cassandra_config, EventsMaterializer(EventsOptions()), journal_id=OTHER_JOURNAL
    )
    await leaf.start()
    await aggregator.start()
    original = messages(5)
    await leaf.write(PartitionId(b"app", 3), original)
    # The same events, forwarded: read from another journal at other offsets and times.
    forwarded = [
        JournalMessage(
            1000 + m.offset,
            m.timestamp_ms + 5000,
            m.message,
            {ORIGIN_KEY: Origin(JOURNAL, b"app", 3, m.offset, m.timestamp_us).encode()},
            m.timestamp_us + 5_000_000,
        )
        for m in original
    ]
    await aggregator.write(PartitionId(b"app", 0), forwarded)
    found = await rows(
        cassandra, "SELECT journal_id, partition, offset, metadata, writetime(message) FROM events"
    )
    assert sorted((j, p, o, w) for j, p, o, _, w in found) == [
        (JOURNAL, 3, m.offset, m.timestamp_us) for m in original
    ]
    assert all(md is None for *_, md, _ in found)  # the origin is not kept as metadata


async def test_latest_keeps_the_newest_event_per_key_also_within_a_millisecond(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    latest = sink(cassandra, cassandra_config, LatestMaterializer(LatestOptions(key_field="host")))
    await latest.start()
    pid = PartitionId(b"state", 0)
    # Six events for two keys inside one millisecond, then written newest first and replayed.
    batch = [
        JournalMessage(
            i, BASE_US // 1000, json.dumps({"host": h, "v": i}).encode(), None, BASE_US + i
        )
        for i, h in enumerate(["a", "b", "a", "b", "a", "b"])
    ]
    for message in reversed(batch):
        await latest.write(pid, [message])
    await latest.write(pid, batch[:2])
    found = {
        bytes(k): (json.loads(m)["v"], o, w)
        for k, m, o, w in await rows(
            cassandra, "SELECT key, message, offset, writetime(message) FROM latest"
        )
    }
    assert found == {b"a": (4, 4, BASE_US + 4), b"b": (5, 5, BASE_US + 5)}


async def test_poison_messages_become_dead_letters_and_the_rest_is_written(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    latest = sink(cassandra, cassandra_config, LatestMaterializer(LatestOptions(key_field="id")))
    await latest.start()
    good = [json.dumps({"id": i}).encode() for i in range(5)]
    bodies = [good[0], b"not json", good[1], b'{"no_id": 1}', good[2], good[3], b"[1]", good[4]]
    batch = [JournalMessage(i, BASE_US // 1000, b, None, BASE_US + i) for i, b in enumerate(bodies)]
    letters = await latest.write_events(
        [latest.event(JOURNAL, PartitionId(b"c", 0), m) for m in batch]
    )
    assert sorted(r.event.offset for r in letters) == [1, 3, 6]
    assert len(await rows(cassandra, "SELECT key FROM latest")) == 5
    stored = await list_dead_letters(cassandra, cassandra_config.keyspace, "g")
    assert [(d.event.offset, d.event.message) for d in stored] == [
        (1, b"not json"),
        (3, b'{"no_id": 1}'),
        (6, b"[1]"),
    ]
    assert "not valid JSON" in stored[0].error
    assert "no key field 'id'" in stored[1].error
    assert stored[0].materializer == "latest"


MAPPED_TABLE = (
    "CREATE TABLE logins (user_id bigint, at timestamp, name text, ok boolean, score double,"
    " tags set<text>, source text, jid uuid, off bigint, PRIMARY KEY (user_id, at))"
)


async def test_mapping_types_missing_fields_ttl_and_timestamp_fields(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(MAPPED_TABLE)
    options = MappingOptions(
        table="logins",
        columns={
            "user_id": "user.id",
            "at": "@event_time",
            "name": "user.name",
            "ok": "ok",
            "score": "score",
            "tags": "tags",
            "jid": "@journal_id",
            "off": "@offset",
        },
        constants={"source": "web"},
        ttl_field="ttl",
        timestamp_field="ts",
    )
    mapping = sink(cassandra, cassandra_config, MappingMaterializer(options))
    await mapping.start()
    bodies = [
        {
            "user": {"id": 1, "name": "ann"},
            "ok": True,
            "score": 1.5,
            "tags": ["x", "y"],
            "ttl": 600,
        },
        {"user": {"id": 2}, "ok": False, "ts": 1_700_000_000_000},  # no name: unset, not null
        {"user": {"id": 3, "name": 42}},  # wrong type: dead letter
        {"user": {"name": "no id"}},  # missing key: dead letter
    ]
    batch = [
        JournalMessage(i, BASE_US // 1000, json.dumps(b).encode(), None, BASE_US + i)
        for i, b in enumerate(bodies)
    ]
    await mapping.write(PartitionId(b"logins", 0), batch)
    found = await rows(
        cassandra,
        "SELECT user_id, name, ok, score, tags, source, jid, off, ttl(source), writetime(source)"
        " FROM logins",
    )
    by_id = {r[0]: r for r in found}
    assert set(by_id) == {1, 2}
    assert by_id[1][1:8] == ("ann", True, 1.5, {"x", "y"}, "web", JOURNAL, 0)
    assert 0 < by_id[1][8] <= 600
    assert by_id[1][9] == BASE_US
    assert by_id[2][1] is None and by_id[2][8] is None
    assert by_id[2][9] == 1_700_000_000_000 * 1000 + (BASE_US + 1) % 1000
    # No tombstone for the missing name: the cell simply does not exist.
    assert (await rows(cassandra, "SELECT writetime(name) FROM logins WHERE user_id = 2"))[0][
        0
    ] is None
    letters = await list_dead_letters(cassandra, cassandra_config.keyspace, "g")
    reasons = {d.event.offset: d.error for d in letters}
    assert "field 'user.name' -> column 'name'" in reasons[2]
    assert "key column 'user_id' is missing" in reasons[3]


async def test_mapping_schema_mismatch_is_refused_at_start(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(MAPPED_TABLE)
    bad_type = MappingOptions(table="logins", columns={"user_id": "u", "at": "@category"})
    with pytest.raises(SchemaMismatch, match="column 'at' is timestamp: @category fills only"):
        await sink(cassandra, cassandra_config, MappingMaterializer(bad_type)).start()
    no_key = MappingOptions(table="logins", columns={"user_id": "u"})
    with pytest.raises(SchemaMismatch, match="key column 'at'"):
        await sink(cassandra, cassandra_config, MappingMaterializer(no_key)).start()
    unknown = MappingOptions(table="logins", columns={"user_id": "u", "at": "t", "nope": "x"})
    with pytest.raises(SchemaMismatch, match="column 'nope' is not a column"):
        await sink(cassandra, cassandra_config, MappingMaterializer(unknown)).start()
    missing = MappingOptions(table="nosuch", columns={"a": "b"})
    with pytest.raises(SchemaMismatch, match="'nosuch' does not exist"):
        await sink(cassandra, cassandra_config, MappingMaterializer(missing)).start()


async def test_a_changed_events_table_is_refused(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(
        "CREATE TABLE events (category blob, bucket timestamp, event_time timestamp,"
        " journal_id uuid, partition int, offset int, message blob,"
        " metadata frozen<map<blob, blob>>,"
        " PRIMARY KEY ((category, bucket), event_time, journal_id, partition, offset))"
    )
    with pytest.raises(SchemaMismatch, match="column 'offset' is int, expected bigint"):
        await sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions())).start()


async def test_cassandra_down_is_a_retryable_sink_error(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    events = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions()))
    await events.start()
    await cassandra.execute("DROP TABLE events")  # not invalid data: a missing table
    with pytest.raises(SinkError):
        await events.write(PartitionId(b"app", 0), messages(3))


async def test_a_changed_ttl_moves_the_events_table_to_new_compaction_windows(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    query = (
        "SELECT compaction FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s"
    )
    first = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions(ttl_s=3600)))
    await first.start()
    (compaction,) = await rows(cassandra, query, cassandra_config.keyspace, "events")
    assert compaction[0]["class"].endswith("TimeWindowCompactionStrategy")
    assert compaction[0]["compaction_window_unit"] == "MINUTES"
    later = sink(cassandra, cassandra_config, EventsMaterializer(EventsOptions(ttl_s=30 * 86400)))
    done = await later.start()
    assert any("altered" in line for line in done)
    (compaction,) = await rows(cassandra, query, cassandra_config.keyspace, "events")
    assert compaction[0]["compaction_window_unit"] == "DAYS"
    assert await later.start() == []  # and then it fits


class _Sloppy(BaseMaterializer):
    """A plugin that gets its types wrong for some events."""

    name = "sloppy"

    def tables(self) -> Sequence[TableSpec]:
        return (TableSpec("sloppy", (("k", "bigint"), ("v", "text")), partition_key=("k",)),)

    def materialize(self, events: Sequence[Event]) -> Materialized:
        values: list[dict[str, Any]] = [{"k": 1, "v": "fine"}, {"k": 2, "v": 7}, {"k": "3"}]
        rows = [Row("sloppy", v, e.time_us, e) for v, e in zip(values, events, strict=False)]
        return Materialized(rows)


async def test_values_a_plugin_gets_wrong_become_dead_letters_naming_the_column(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    sloppy = sink(cassandra, cassandra_config, _Sloppy())
    await sloppy.start()
    letters = await sloppy.write_events(
        [sloppy.event(JOURNAL, PartitionId(b"p", 0), m) for m in messages(3)]
    )
    assert [(r.event.offset, r.reason.split(":")[0]) for r in letters] == [
        (1, "column 'v'"),
        (2, "column 'k'"),
    ]
    assert await rows(cassandra, "SELECT k, v FROM sloppy") == [(1, "fine")]
