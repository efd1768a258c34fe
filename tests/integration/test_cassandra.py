"""consumers.cassandra against the real Cassandra of `pipeline services start`."""

from __future__ import annotations

import os
import time

import pytest

from consumers.cassandra import CassandraConfig, CassandraSession, open_cassandra
from consumers.errors import CassandraQueryError, CassandraUnavailable

pytestmark = pytest.mark.integration


async def test_keyspace_and_table_are_created(
    cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    keyspace = cassandra_config.keyspace
    rows = await cassandra.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    replication = rows.one()
    assert replication is not None
    assert replication[0]["class"].endswith("SimpleStrategy")
    assert replication[0]["replication_factor"] == "1"
    await cassandra.execute(
        "CREATE TABLE IF NOT EXISTS events (category text, seq bigint, body blob,"
        " PRIMARY KEY (category, seq))"
    )
    tables = await cassandra.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    assert ("events",) in tables.rows
    # Creating again is a no-op, as schema migrations rely on.
    assert await cassandra.create_keyspace() == keyspace
    assert (await cassandra.release_version()).startswith(("5.0.", "4.1."))


async def test_prepared_insert_and_select_round_trip_binary(cassandra: CassandraSession) -> None:
    await cassandra.execute(
        "CREATE TABLE blobs (category text, seq bigint, body blob, PRIMARY KEY (category, seq))"
    )
    insert = await cassandra.prepare("INSERT INTO blobs (category, seq, body) VALUES (?, ?, ?)")
    select = await cassandra.prepare("SELECT seq, body FROM blobs WHERE category = ?")
    bodies = [b"", bytes(range(256)), b"\x00" * 17, os.urandom(1 << 20)]
    for seq, body in enumerate(bodies):
        await cassandra.execute(insert, ("bin", seq, body))
    rows = await cassandra.execute(select, ("bin",))
    assert rows.columns == ("seq", "body")
    # Cassandra returns an empty blob as an empty value, never as null.
    assert [(seq, bytes(body or b"")) for seq, body in rows.rows] == list(enumerate(bodies))
    assert len(await cassandra.execute(select, ("other",))) == 0


async def test_rejected_query_is_translated(cassandra: CassandraSession) -> None:
    with pytest.raises(CassandraQueryError) as err:
        await cassandra.execute("SELECT * FROM no_such_table")
    assert "no_such_table" in str(err.value)
    with pytest.raises(CassandraQueryError):
        await cassandra.prepare("INSERT INTO nowhere VALUES (?)")


async def test_closed_port_is_unavailable_within_timeout(closed_port: int) -> None:
    config = CassandraConfig(port=closed_port, connect_timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(CassandraUnavailable) as err:
        async with open_cassandra(config):
            pass
    assert time.monotonic() - began < 2.0 + 3.0
    assert f"127.0.0.1:{closed_port}" in str(err.value)


async def test_silent_server_is_unavailable_within_timeout(silent_listener: int) -> None:
    config = CassandraConfig(port=silent_listener, connect_timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(CassandraUnavailable) as err:
        async with open_cassandra(config):
            pass
    assert time.monotonic() - began < 2.0 + 5.0
    assert f"127.0.0.1:{silent_listener}" in str(err.value)
