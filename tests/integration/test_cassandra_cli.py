"""``pipeline schema``, ``pipeline deadletters`` and ``pipeline events`` against the real
Cassandra: each test writes a configuration whose keyspace is its own, and runs the commands
with click's runner (in a worker thread, since they run trio themselves) or as processes."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from consumers.cassandra import CassandraConfig, CassandraSession
from consumers.sinks.cassandra import DEAD_LETTERS, SCHEMA_VERSIONS, CassandraSink, EventsOptions
from consumers.sinks.cassandra.events import events_table
from consumers.sinks.cassandra.latest import latest_table
from consumers.sinks.cassandra.schema import cql_of
from journal import JournalMessage, PartitionId
from pipeline import cassandra_queries as queries
from pipeline import config as config_module
from pipeline.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOURNAL = uuid.UUID("00000000-0000-4000-8000-000000000001")
BASE_US = 1_795_000_000_000_000  # 2026-11-18T11:06:40Z
BASE_MS = BASE_US // 1000


def write_config(
    tmp_path: Path, cassandra: CassandraConfig, groups: str, *, keyspace: str | None = None
) -> Path:
    path = tmp_path / f"pipeline-{uuid.uuid4().hex[:6]}.toml"
    hosts = ", ".join(json.dumps(h) for h in cassandra.hosts)
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[cassandra]
hosts = [{hosts}]
port = {cassandra.port}
keyspace = "{keyspace or cassandra.keyspace}"
connect_timeout_s = {cassandra.connect_timeout_s}
request_timeout_s = {cassandra.request_timeout_s}
"""
        + groups
    )
    return path


def group(name: str, materializer: str, options: str = "", categories: str = '["*"]') -> str:
    return f"""
[[consumers]]
name = "{name}"
categories = {categories}
sink = "cassandra"
[consumers.cassandra]
materializer = "{materializer}"
{options}
"""


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


async def cli(*args: str | Path) -> Result:
    """The command in a worker thread: it runs trio.run of its own."""
    return await trio.to_thread.run_sync(functools.partial(invoke, *args))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def config_sink(path: Path, name: str, session: CassandraSession) -> CassandraSink:
    """The group's sink as ``pipeline consume`` builds it from the file at ``path``."""
    config = config_module.load(path)
    return queries.group_sink(config, config.group(name), session)


async def write(
    sink: CassandraSink, category: bytes, bodies: list[bytes], *, partition: int = 0
) -> None:
    """Materialize ``bodies`` as offsets 0.. of ``category/partition``, a microsecond apart."""
    await sink.start()
    messages = [
        JournalMessage(i, (BASE_US + i) // 1000, body, None, BASE_US + i)
        for i, body in enumerate(bodies)
    ]
    pid = PartitionId(category, partition)
    await sink.write_events([sink.event(JOURNAL, pid, m) for m in messages])


async def rows(session: CassandraSession, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return list((await session.execute(query, params or None)).rows)


# -- schema ----------------------------------------------------------------------------------


def test_schema_show_prints_the_cql_without_a_server(tmp_path: Path, closed_port: int) -> None:
    down = CassandraConfig(port=closed_port, keyspace="shown", connect_timeout_s=1.0)
    path = write_config(
        tmp_path,
        down,
        group("events", "events", "bucket_s = 60\nttl_s = 86400")
        + group("state", "latest", 'key_field = "host"'),
    )
    result = invoke("schema", "show", "--config", path)
    assert result.exit_code == 0, result.stdout
    assert "CREATE KEYSPACE IF NOT EXISTS shown WITH replication" in result.stdout
    for spec in (
        events_table("events", 86400),
        latest_table("latest"),
        SCHEMA_VERSIONS,
        DEAD_LETTERS,
    ):
        assert cql_of(spec, "shown") in result.stdout
    only = invoke("schema", "show", "--config", path, "--group", "state")
    assert cql_of(latest_table("latest"), "shown") in only.stdout
    assert "shown.events" not in only.stdout


async def test_schema_apply_creates_then_is_a_no_op(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    keyspace = cassandra_config.keyspace + "_new"
    path = write_config(
        tmp_path,
        cassandra_config,
        group("events", "events", "bucket_s = 60") + group("state", "latest", 'key_field = "h"'),
        keyspace=keyspace,
    )
    try:
        before = await cli("schema", "diff", "--config", path)
        assert before.exit_code == 1
        assert f"keyspace {keyspace!r} does not exist" in before.stdout
        first = await cli("schema", "apply", "--config", path)
        assert first.exit_code == 0, first.stdout
        assert first.stdout.splitlines() == [
            f"created keyspace {keyspace} with replication "
            "{'class': 'SimpleStrategy', 'replication_factor': '1'}",
            f"created {keyspace}.events (version 1)",
            f"created {keyspace}.dead_letters (version 1)",
            f"created {keyspace}.latest (version 1)",
        ]
        versions = await rows(
            cassandra, f"SELECT table_name, version FROM {keyspace}.schema_versions"
        )
        assert sorted(versions) == [("dead_letters", 1), ("events", 1), ("latest", 1)]
        second = await cli("schema", "apply", "--config", path)
        assert (second.exit_code, second.stdout) == (0, "schema up to date\n")
        diff = await cli("schema", "diff", "--config", path)
        assert (diff.exit_code, diff.stdout) == (0, "schema up to date\n")
        quiet = await cli("schema", "diff", "--config", path, "--json")
        assert (quiet.exit_code, quiet.stdout) == (0, "")
        empty = await cli("deadletters", "list", "--config", path, "--json")
        assert (empty.exit_code, empty.stdout) == (0, "")
    finally:
        await cassandra.drop_keyspace(keyspace)


async def test_schema_diff_reports_a_mistyped_column_and_apply_refuses_it(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(
        "CREATE TABLE events (category blob, bucket timestamp, event_time timestamp,"
        " journal_id uuid, partition int, offset int, message blob,"
        " metadata frozen<map<blob, blob>>,"
        " PRIMARY KEY ((category, bucket), event_time, journal_id, partition, offset))"
    )
    path = write_config(tmp_path, cassandra_config, group("events", "events"))
    diff = await cli("schema", "diff", "--config", path)
    assert diff.exit_code == 1
    lines = diff.stdout.splitlines()
    assert "group 'events': table 'events': column 'offset' is int, expected bigint" in lines
    assert "table 'dead_letters' does not exist" in lines
    assert "schema up to date" not in diff.stdout
    as_json = await cli("schema", "diff", "--config", path, "--json")
    assert as_json.exit_code == 1
    assert {
        "group": "events",
        "table": "events",
        "problem": "table 'events': column 'offset' is int, expected bigint",
    } in json_lines(as_json.stdout)
    tables = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s"
    keyspace = cassandra_config.keyspace
    assert await rows(cassandra, tables, keyspace) == [("events",)]  # diff changed nothing
    apply = await cli("schema", "apply", "--config", path)
    assert apply.exit_code == 1
    assert (
        "Error: group 'events': table 'events': column 'offset' is int, expected bigint"
        in apply.stderr.splitlines()
    )
    recorded = await rows(cassandra, f"SELECT table_name FROM {keyspace}.schema_versions")
    assert ("events",) not in recorded  # not adopted


async def test_apply_and_diff_check_a_mapping_against_its_users_table(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(
        "CREATE TABLE logins (user_id bigint, at timestamp, PRIMARY KEY (user_id, at))"
    )
    options = """table = "logins"
[consumers.cassandra.columns]
user_id = "user.id"
at = "@event_time"
score = "score"
"""
    path = write_config(tmp_path, cassandra_config, group("logins", "mapping", options))
    apply = await cli("schema", "apply", "--config", path)
    assert apply.exit_code == 1
    problem = (
        "group 'logins': mapping materializer: column 'score' is not a column of table 'logins'"
    )
    assert f"Error: {problem}" in apply.stderr.splitlines()
    assert f"created {cassandra_config.keyspace}.dead_letters (version 1)" in apply.stdout
    diff = await cli("schema", "diff", "--config", path, "--json")
    assert diff.exit_code == 1
    assert json_lines(diff.stdout) == [
        {"group": "logins", "table": "logins", "problem": problem.split(": ", 1)[1]}
    ]
    await cassandra.execute("ALTER TABLE logins ADD score int")
    assert (await cli("schema", "apply", "--config", path)).exit_code == 0
    assert (await cli("schema", "diff", "--config", path)).stdout == "schema up to date\n"


@pytest.mark.parametrize(
    "command",
    [
        ["schema", "diff"],
        ["schema", "apply"],
        ["deadletters", "list"],
        ["deadletters", "replay"],
        ["events", "--category", "app"],
    ],
)
def test_cassandra_unreachable_is_one_line_and_exit_1(
    tmp_path: Path, closed_port: int, command: list[str]
) -> None:
    down = CassandraConfig(port=closed_port, keyspace="nowhere", connect_timeout_s=2.0)
    path = write_config(tmp_path, down, group("events", "events"))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert f"127.0.0.1:{closed_port}" in done.stderr
    assert done.stderr.startswith("Error: cannot reach Cassandra")


# -- dead letters ----------------------------------------------------------------------------

MAPPING_V1 = """table = "logins"
[consumers.cassandra.columns]
user_id = "user.id"
at = "@event_time"
score = "score"
"""
# The fix: fractional scores go to a double column added to the table.
MAPPING_V2 = MAPPING_V1.replace('score = "score"', 'score_d = "score"')


async def test_mapping_dead_letters_are_listed_shown_and_replayed_once_fixed(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    await cassandra.execute(
        "CREATE TABLE logins (user_id bigint, at timestamp, score int, PRIMARY KEY (user_id, at))"
    )
    before = write_config(
        tmp_path, cassandra_config, group("logins", "mapping", MAPPING_V1, '["logins"]')
    )
    bodies = [
        b'{"user": {"id": 1}, "score": 3}',
        b'{"user": {"id": 2}, "score": 2.5}',  # a float for an int column
        b'{"user": {"id": 3}, "score": 0.5}',
        b"\xff\xfe not json",  # never materializes
        b'{"user": {"id": 5}, "score": 7}',
    ]
    await write(config_sink(before, "logins", cassandra), b"logins", bodies)
    assert sorted(r[0] for r in await rows(cassandra, "SELECT user_id FROM logins")) == [1, 5]

    listed = await cli("deadletters", "list", "--config", before, "--json")
    assert listed.exit_code == 0, listed.stdout
    letters = json_lines(listed.stdout)
    assert [(d["group"], d["category"], d["partition"], d["offset"]) for d in letters] == [
        ("logins", "logins", 0, 1),
        ("logins", "logins", 0, 2),
        ("logins", "logins", 0, 3),
    ]
    assert all(d["journal_id"] == str(JOURNAL) and d["materializer"] == "mapping" for d in letters)
    assert [d["message_bytes"] for d in letters] == [len(bodies[i]) for i in (1, 2, 3)]
    assert letters[0]["event_time"] == (BASE_US + 1) // 1000
    assert letters[0]["time_us"] == BASE_US + 1
    assert "field 'score' -> column 'score'" in letters[0]["error"]
    assert "not valid JSON" in letters[2]["error"]
    text = await cli("deadletters", "list", "--config", before)
    assert text.stdout.splitlines()[0].split()[:3] == ["GROUP", "CATEGORY", "PART"]
    assert len(text.stdout.splitlines()) == 4
    assert "2026-11-18T11:06:40.000Z" in text.stdout
    limited = await cli("deadletters", "list", "--config", before, "-c", "logins", "--limit", "2")
    assert len(limited.stdout.splitlines()) == 3
    other = await cli("deadletters", "list", "--config", before, "-c", "other", "--json")
    assert (other.exit_code, other.stdout) == (0, "")

    shown = await cli(
        "deadletters", "show", "--config", before, "-c", "logins", "-p", "0", "--offset", "1"
    )
    assert shown.exit_code == 0, shown.stdout
    record = json.loads(shown.stdout)
    assert record["message"] == bodies[1].decode()
    assert "encoding" not in record
    binary = await cli(
        "deadletters", "show", "--config", before, "-c", "logins", "-p", "0", "--offset", "3",
        "--journal-id", str(JOURNAL),
    )  # fmt: skip
    record = json.loads(binary.stdout)
    assert record["encoding"] == "base64"
    assert base64.b64decode(record["message"]) == bodies[3]
    missing = await cli(
        "deadletters", "show", "--config", before, "-c", "logins", "-p", "0", "--offset", "9"
    )
    assert missing.exit_code == 1
    assert "no dead letter of group 'logins' at logins/0@9" in missing.stderr

    # Fix the table and the configuration, then replay.
    await cassandra.execute("ALTER TABLE logins ADD score_d double")
    after = write_config(
        tmp_path, cassandra_config, group("logins", "mapping", MAPPING_V2, '["logins"]')
    )
    dry = await cli("deadletters", "replay", "--config", after, "--dry-run")
    assert dry.exit_code == 1
    assert dry.stdout == "would replay 2, still failing 1\n"
    assert (
        len(json_lines((await cli("deadletters", "list", "--config", after, "--json")).stdout)) == 3
    )
    assert sorted(r[0] for r in await rows(cassandra, "SELECT user_id FROM logins")) == [1, 5]

    replay = await cli("deadletters", "replay", "--config", after)
    assert replay.exit_code == 1
    assert replay.stdout == "replayed 2, still failing 1\n"
    assert "still failing: logins/0@3" in replay.stderr
    assert "not valid JSON" in replay.stderr
    found = {
        r[0]: (r[1], r[2])
        for r in await rows(cassandra, "SELECT user_id, score_d, writetime(score_d) FROM logins")
    }
    assert found[2] == (2.5, BASE_US + 1)  # written at the event's time, not the replay's
    assert found[3] == (0.5, BASE_US + 2)
    assert sorted(found) == [1, 2, 3, 5]
    left = json_lines((await cli("deadletters", "list", "--config", after, "--json")).stdout)
    assert [d["offset"] for d in left] == [3]
    assert left[0]["failed_at"] >= letters[2]["failed_at"]
    again = await cli("deadletters", "replay", "--config", after, "--group", "logins")
    assert (again.exit_code, again.stdout) == (1, "replayed 0, still failing 1\n")


async def test_latest_dead_letters_replay_after_the_key_field_is_fixed(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    events = group("all", "events", categories='["other*"]')
    wrong = write_config(
        tmp_path, cassandra_config, events + group("state", "latest", 'key_field = "id"')
    )
    bodies = [json.dumps({"host": h, "load": i}).encode() for i, h in enumerate("aba")]
    await write(config_sink(wrong, "state", cassandra), b"hosts", bodies, partition=2)
    assert (
        len(json_lines((await cli("deadletters", "list", "--config", wrong, "--json")).stdout)) == 3
    )

    ambiguous = await cli("deadletters", "replay", "--config", wrong)
    assert ambiguous.exit_code == 2
    assert "--group is required: the Cassandra groups are all, state" in ambiguous.stderr
    unknown = await cli("deadletters", "replay", "--config", wrong, "--group", "nope")
    assert unknown.exit_code == 78

    fixed = write_config(
        tmp_path, cassandra_config, events + group("state", "latest", 'key_field = "host"')
    )
    elsewhere = await cli("deadletters", "replay", "--config", fixed, "-g", "state", "-c", "x")
    assert (elsewhere.exit_code, elsewhere.stdout) == (0, "replayed 0, still failing 0\n")
    replay = await cli("deadletters", "replay", "--config", fixed, "--group", "state")
    assert replay.exit_code == 0, replay.stdout + replay.stderr
    assert replay.stdout == "replayed 3, still failing 0\n"
    assert "replaying 3 dead letters of state" in replay.stderr
    latest = {
        bytes(k): (json.loads(m)["load"], o, w)
        for k, m, o, w in await rows(
            cassandra, "SELECT key, message, offset, writetime(message) FROM latest"
        )
    }
    assert latest == {b"a": (2, 2, BASE_US + 2), b"b": (1, 1, BASE_US + 1)}
    listed = await cli("deadletters", "list", "--config", fixed, "--json")
    assert (listed.exit_code, listed.stdout) == (0, "")


# -- events ----------------------------------------------------------------------------------


async def test_events_reads_rows_back_in_order_with_binary_messages_as_base64(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    path = write_config(tmp_path, cassandra_config, group("events", "events", "bucket_s = 60"))
    sink = config_sink(path, "events", cassandra)
    await sink.start()
    # Eight events 25 s apart (four buckets of a minute), over two partitions, written newest
    # first; two of them binary, one with metadata.
    step_us = 25_000_000
    bodies = [b"text-%d" % i if i % 3 else b"\x00\xff-%d" % i for i in range(8)]
    events = []
    for i, body in reversed(list(enumerate(bodies))):
        metadata = {b"host": b"web-1"} if i == 4 else None
        message = JournalMessage(i, 0, body, metadata, BASE_US + i * step_us)
        events.append(sink.event(JOURNAL, PartitionId(b"app", i % 2), message))
    await sink.write_events(events)
    await write(sink, b"other", [b"not app"])

    since, until = str(BASE_MS), str(BASE_MS + 10 * 60_000)
    result = await cli("events", "--config", path, "-c", "app", "--since", since, "--until", until)
    assert result.exit_code == 0, result.stdout + result.stderr
    found = json_lines(result.stdout)
    assert [r["event_time"] for r in found] == [BASE_MS + i * 25_000 for i in range(8)]
    assert [r["offset"] for r in found] == list(range(8))
    assert [r["partition"] for r in found] == [i % 2 for i in range(8)]
    assert {r["category"] for r in found} == {"app"}
    assert {r["journal_id"] for r in found} == {str(JOURNAL)}
    assert [r["bucket"] for r in found] == [
        t - t % 60_000 for t in (r["event_time"] for r in found)
    ]
    for i, record in enumerate(found):
        if i % 3:
            assert (record["message"], "encoding" in record) == (bodies[i].decode(), False)
        else:
            assert record["encoding"] == "base64"
            assert base64.b64decode(record["message"]) == bodies[i]
        assert ("metadata" in record) == (i == 4)
    assert found[4]["metadata"] == {"host": "web-1"}

    limited = await cli(
        "events", "--config", path, "-c", "app", "--since", since, "--until", until, "--limit", "3"
    )
    assert json_lines(limited.stdout) == found[:3]
    # ISO 8601 bounds; --until is exclusive.
    iso = await cli(
        "events", "--config", path, "-c", "app",
        "--since", "2026-11-18T11:07:05Z", "--until", "2026-11-18T11:08:05+00:00",
    )  # fmt: skip
    assert [r["offset"] for r in json_lines(iso.stdout)] == [1, 2, 3]
    # The query layer pages through buckets in bounded pages.
    paged = [
        e
        async for e in queries.read_events(
            cassandra,
            cassandra_config.keyspace,
            EventsOptions(bucket_s=60),
            b"app",
            BASE_MS,
            BASE_MS + 600_000,
            page_rows=1,
        )
    ]
    assert [e.offset for e in paged] == list(range(8))
    assert paged[0].message == bodies[0]

    nothing = await cli(
        "events", "--config", path, "-c", "none", "--since", since, "--until", until
    )
    assert (nothing.exit_code, nothing.stdout) == (0, "")
    recent = await cli("events", "--config", path, "-c", "app")  # the last 10 minutes: none
    assert (recent.exit_code, recent.stdout) == (0, "")
    wide = await cli(
        "events", "--config", path, "-c", "app", "--since", "30d", "--max-buckets", "100"
    )
    assert wide.exit_code == 2
    assert "buckets of 60 s, more than 100: narrow --since/--until" in wide.stderr


async def test_events_names_a_missing_table(
    tmp_path: Path, cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    path = write_config(tmp_path, cassandra_config, group("events", "events"))
    result = await cli("events", "--config", path, "-c", "app")
    assert result.exit_code == 1
    assert f"table {cassandra_config.keyspace}.events does not exist" in result.stderr


def test_bucket_starts_refuse_too_many_buckets() -> None:
    assert len(queries.bucket_starts(BASE_MS, BASE_MS + 1, 3600, 1)) == 1
    with pytest.raises(queries.TooManyBuckets):
        queries.bucket_starts(BASE_MS, BASE_MS + 7_200_000, 3600, 2)


# -- docs ------------------------------------------------------------------------------------


def test_docs_tables_has_every_built_in_tables_cql() -> None:
    text = (ROOT / "docs" / "tables.md").read_text()
    for spec in (
        events_table("events"),
        events_table("events", 30 * 86400),
        latest_table("latest"),
        DEAD_LETTERS,
        SCHEMA_VERSIONS,
    ):
        assert cql_of(spec, "scribe_pipeline") in text, spec.name
