"""Real ``pipeline run`` processes materializing into the real Cassandra, end to end.

Each test has its own keyspace (the ``cassandra_config`` fixture), and each process its own
configuration in ``tmp_path``: a journal directory, a local coordinator's state directory and a
free port on 127.0.0.1.  Clients speak Scribe to the processes' ports and resend what was not
acknowledged (TRY_LATER or a broken connection), as Scribe's clients do; every message is
distinct (``<tag>-<client>-<sequence>``), so the test knows what was sent, what was acknowledged
and, from the journal, where each message landed.  The invariant checked everywhere: the
``events`` table holds exactly one row per journal position, with the journal's message and times
(``writetime(message)`` is the event's time in microseconds), whatever was killed, stopped or
replayed on the way.

"Caught up" means: every group's committed offset equals the high-water mark of every partition
it consumes (polled, with a bounded wait).  Server processes log into ``tmp_path/*.log``, whose
tails the integration conftest attaches to a failing test's report.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

import pytest
import trio

from consumers import CategoryMatcher
from consumers.cassandra import CassandraConfig, CassandraSession, open_cassandra
from consumers.origin import ORIGIN_KEY
from consumers.sinks.base import original_category
from consumers.sinks.cassandra import list_dead_letters
from journal import JournalMessage, PartitionId, list_partitions, read_journal_id
from pipeline.config import PipelineConfig
from pipeline.config import load as load_config
from pipeline.consumer_app import build_coordinator
from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.process import port_accepts
from scribe_compat import AsyncScribeClient, ClientError, LogEntry, ResultCode

from ..e2e.conftest import ServerProcess, read_partition, run_pipeline
from .conftest import managed_cassandra

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCH = datetime(1970, 1, 1)
HOUR_MS = 3_600_000

# ``pipeline run`` settings every test shares: small batches and frequent commits, so that
# kills and outages land in the middle of writes and commits, and quick backoff, so that a
# paused partition resumes soon after Cassandra answers again.
GROUP_TUNING = """
batch_messages = 500
batch_wait_s = 0.02
commit_interval_s = 0.3
discover_interval_s = 0.5
backoff_initial_s = 0.05
backoff_max_s = 1.0
"""


# -- processes and configuration ------------------------------------------------------------------


class RunProcess(ServerProcess):
    """``pipeline run --config``: the log server and the configuration's embedded consumer
    groups in one process, on the port the configuration names; restartable on the same
    journal and state directories."""

    def __init__(self, config: Path, journal_dir: Path, log_path: Path) -> None:
        super().__init__(journal_dir, log_path, config, ())

    def arguments(self) -> list[str | Path]:
        assert self.config is not None
        return ["run", "--config", self.config]

    def working_directory(self) -> Path:
        assert self.config is not None
        return self.config.parent

    def start(self, timeout: float = 30.0) -> Self:
        return super().start(timeout)

    async def astart(self) -> RunProcess:
        return await trio.to_thread.run_sync(self.start)

    async def akill(self) -> None:
        await trio.to_thread.run_sync(self.kill)

    async def aterminate(self) -> int:
        return await trio.to_thread.run_sync(self.terminate)

    async def counters(self) -> dict[str, int]:
        """The process's fb303 counters (the embedded groups' under ``consumer <group>:``)."""
        async with await AsyncScribeClient.connect(*self.address, 10.0) as client:
            return await client.get_counters()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One ``pipeline run``'s files: configuration, journal, state, log."""

    name: str
    config_path: Path
    journal_dir: Path
    process: RunProcess

    @property
    def config(self) -> PipelineConfig:
        return load_config(self.config_path, environ={})

    def journal_id(self) -> uuid.UUID:
        return read_journal_id(self.journal_dir)


def events_group(name: str = "events", table: str = "events", extra: str = "") -> str:
    return f"""
[[consumers]]
name = "{name}"
categories = ["*"]
sink = "cassandra"
{GROUP_TUNING}
{extra}
[consumers.cassandra]
materializer = "events"
table = "{table}"
"""


def forward_group(name: str, port: int) -> str:
    return f"""
[[consumers]]
name = "{name}"
categories = ["*"]
sink = "forward"
{GROUP_TUNING}
[consumers.forward]
host = "127.0.0.1"
port = {port}
timeout_s = 5.0
backoff_initial_s = 0.05
backoff_max_s = 1.0
"""


@pytest.fixture
def nodes(tmp_path: Path, cassandra_config: CassandraConfig) -> Iterator[Callable[..., Node]]:
    """A factory: ``nodes(name, groups, routes="", port=None, cassandra_port=None)`` writes a
    configuration for one ``pipeline run`` in ``tmp_path/<name>/`` (not started).  Every
    process is killed at teardown."""
    made: list[Node] = []

    def make(
        name: str,
        groups: str,
        routes: str = "",
        port: int | None = None,
        cassandra_port: int | None = None,
    ) -> Node:
        home = tmp_path / name
        home.mkdir()
        journal_dir = home / "journal"
        hosts = ", ".join(json.dumps(h) for h in cassandra_config.hosts)
        text = f"""
[server]
host = "127.0.0.1"
port = {port or free_port()}
drain_timeout_s = 2.0

[journal]
dir = "{journal_dir}"

[coordination]
kind = "local"
state_dir = "{home / "state"}"
rescan_interval_s = 0.5
revoke_timeout_s = 5.0

[cassandra]
hosts = [{hosts}]
port = {cassandra_port or cassandra_config.port}
keyspace = "{cassandra_config.keyspace}"
request_timeout_s = 10.0

# The shared services are the test session's business, never the daemon's.
[services.cassandra]
enabled = false
[services.zookeeper]
enabled = false

[log]
status_interval_s = 5.0
{routes}
{groups}
"""
        config_path = home / "pipeline.toml"
        config_path.write_text(text)
        node = Node(
            name,
            config_path,
            journal_dir,
            RunProcess(config_path, journal_dir, tmp_path / f"{name}.log"),
        )
        made.append(node)
        return node

    yield make
    for node in made:
        node.process.kill()


# -- clients ---------------------------------------------------------------------------------------


@dataclass
class Sender:
    """One Scribe client sending ``total`` distinct messages in order, in batches of 1 to
    ``max_batch``, resending a batch until it is acknowledged.

    ``allowed`` caps how many may be sent so far (tests raise it round by round); a batch whose
    call broke (the outcome unknown: it may be journaled) is counted in ``unknown`` per message,
    since its resend may journal it a second time.
    """

    tag: str
    cid: int
    categories: Sequence[bytes]
    total: int
    max_batch: int = 40
    pace_s: float = 0.0
    allowed: int = 0
    acked: int = 0  # messages 0 .. acked-1 are acknowledged
    unknown: Counter[int] = field(default_factory=Counter)
    calls_ok: int = 0
    try_later: int = 0
    broken: int = 0
    connects: int = 0
    outcomes: list[tuple[float, str]] = field(default_factory=list)
    stop: bool = False

    def __post_init__(self) -> None:
        self.allowed = self.allowed or self.total
        self._rng = random.Random(f"{self.tag}-{self.cid}")

    def message(self, seq: int) -> bytes:
        return f"{self.tag}-{self.cid}-{seq:06d}-".encode() + b"x" * (seq % 37)

    def category(self, seq: int) -> bytes:
        return self.categories[seq % len(self.categories)]

    def acked_messages(self) -> dict[bytes, bytes]:
        """Message -> category, for every acknowledged message."""
        return {self.message(s): self.category(s) for s in range(self.acked)}

    @property
    def done(self) -> bool:
        return self.acked >= self.total or (self.stop and self.acked >= self.allowed)

    async def run(self, address: Callable[[], tuple[str, int]]) -> None:
        client: AsyncScribeClient | None = None
        batch: range | None = None
        try:
            while not self.done:
                if self.stop:
                    self.allowed = batch.stop if batch is not None else self.acked
                    if self.done:
                        break
                if batch is None and self.acked >= self.allowed:
                    await trio.sleep(0.02)
                    continue
                if client is None:
                    try:
                        client = await AsyncScribeClient.connect(*address(), 5.0)
                        self.connects += 1
                    except ClientError:
                        await trio.sleep(0.05)
                        continue
                if batch is None:
                    size = self._rng.randint(1, self.max_batch)
                    batch = range(self.acked, min(self.acked + size, self.allowed))
                entries = [LogEntry(self.category(s), self.message(s)) for s in batch]
                try:
                    code = await client.log(entries)
                except ClientError:
                    self.broken += 1
                    self.unknown.update(batch)
                    self.outcomes.append((trio.current_time(), "broken"))
                    with trio.CancelScope(shield=True):
                        await client.aclose()
                    client = None
                    continue
                if code is ResultCode.OK:
                    self.acked = batch.stop
                    batch = None
                    self.calls_ok += 1
                    self.outcomes.append((trio.current_time(), "ok"))
                    if self.pace_s:
                        await trio.sleep(self.pace_s)
                else:
                    self.try_later += 1
                    self.outcomes.append((trio.current_time(), "try_later"))
                    await trio.sleep(0.05)
        finally:
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    def summary(self) -> str:
        return (
            f"client {self.tag}-{self.cid}: {self.acked}/{self.total} acked, {self.calls_ok} OK "
            f"calls, {self.try_later} TRY_LATER, {self.broken} broken, {self.connects} connects"
        )


# -- what the journal and the tables hold ----------------------------------------------------------

Position = tuple[uuid.UUID, bytes, int, int]  # journal id, category, partition, offset


def journal_contents(journal_dir: Path) -> dict[tuple[bytes, int, int], JournalMessage]:
    """(category, partition, offset) -> message, for everything below the high-water marks."""
    out: dict[tuple[bytes, int, int], JournalMessage] = {}
    for info in list_partitions(journal_dir):
        for message in read_partition(journal_dir, info.pid, info.earliest_offset):
            out[(info.category, info.partition, message.offset)] = message
    return out


def ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


EVENT_COLUMNS = (
    "category, bucket, event_time, journal_id, partition, offset, message, metadata,"
    " writetime(message)"
)


@dataclass(frozen=True)
class EventRow:
    category: bytes
    bucket_ms: int
    event_time_ms: int
    journal_id: uuid.UUID
    partition: int
    offset: int
    message: bytes
    metadata: dict[bytes, bytes] | None
    writetime_us: int

    @property
    def position(self) -> Position:
        return (self.journal_id, self.category, self.partition, self.offset)


async def event_rows(
    session: CassandraSession, keyspace: str, table: str = "events"
) -> list[EventRow]:
    rows = await session.execute(f"SELECT {EVENT_COLUMNS} FROM {keyspace}.{table}")
    return [
        EventRow(
            bytes(r[0]),
            ms(r[1]),
            ms(r[2]),
            r[3],
            int(r[4]),
            int(r[5]),
            bytes(r[6] or b""),
            {bytes(k): bytes(v) for k, v in r[7].items()} if r[7] else None,
            int(r[8]),
        )
        for r in rows.rows
    ]


def row_problems(
    rows: Sequence[EventRow],
    journals: dict[uuid.UUID, dict[tuple[bytes, int, int], JournalMessage]],
) -> list[str]:
    """Every difference between the rows and 'one row per journal position, with the
    journal's message, metadata (without the origin stamp), event time, bucket and write
    time'."""
    problems: list[str] = []
    seen = Counter(row.position for row in rows)
    problems += [f"{n} rows for position {p}" for p, n in seen.items() if n > 1]
    expected = {
        (jid, *key): message
        for jid, contents in journals.items()
        for key, message in contents.items()
    }
    for row in rows:
        message = expected.get(row.position)
        if message is None:
            problems.append(f"row for {row.position} that no journal has: {row.message[:60]!r}")
            continue
        time_ms = message.timestamp_us // 1000
        wrong = []
        if row.message != message.message:
            wrong.append(f"message {row.message[:60]!r} != journal's {message.message[:60]!r}")
        if row.event_time_ms != time_ms:
            wrong.append(f"event_time {row.event_time_ms} != journal's {time_ms}")
        if row.bucket_ms != time_ms - time_ms % HOUR_MS:
            wrong.append(f"bucket {row.bucket_ms} is not the hour of {time_ms}")
        if row.writetime_us != message.timestamp_us:
            wrong.append(f"writetime {row.writetime_us} != journal's {message.timestamp_us}")
        metadata = {k: v for k, v in (message.metadata or {}).items() if k != ORIGIN_KEY}
        if row.metadata != (metadata or None):
            wrong.append(f"metadata {row.metadata!r} != journal's {metadata or None!r}")
        problems += [f"{row.position}: {w}" for w in wrong]
    missing = sorted(set(expected) - set(seen))
    problems += [f"no row for journal position {p}" for p in missing[:20]]
    if len(missing) > 20:
        problems.append(f"... {len(missing) - 20} more positions without a row")
    return problems


def assert_no_problems(problems: list[str], context: str) -> None:
    shown = "\n  ".join(problems[:30])
    more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
    assert not problems, f"{len(problems)} problems ({context}):\n  {shown}{more}"


def check_acknowledged(
    senders: Sequence[Sender], contents: dict[tuple[bytes, int, int], JournalMessage], label: str
) -> Counter[bytes]:
    """Every acknowledged message is journaled at least once, in its category (or in the
    catch-all, its category in the metadata); only a message whose call broke may be there
    more than once (at most once more per broken call).  Returns how often each message is
    journaled."""
    counts: Counter[bytes] = Counter(m.message for m in contents.values())
    categories = {
        m.message: original_category(PartitionId(c, p), m) for (c, p, _), m in contents.items()
    }
    for sender in senders:
        acked = sender.acked_messages()
        lost = [m for m in acked if m not in counts]
        assert not lost, f"{label}: {len(lost)} acknowledged messages not journaled: {lost[:5]}"
        wrong = [m for m, c in acked.items() if categories[m] != c]
        assert not wrong, f"{label}: messages in the wrong category: {wrong[:5]}"
        for seq in range(sender.total):
            message = sender.message(seq)
            allowed = 1 + sender.unknown[seq]
            assert counts[message] <= allowed, (
                f"{label}: {message!r} journaled {counts[message]} times, sent {allowed} times"
            )
    return counts


async def wait_caught_up(
    node: Node, *, timeout_s: float, label: str, at_least: int = 1
) -> dict[PartitionId, int]:
    """Poll until every group in ``node``'s configuration has committed up to the high-water
    mark of every partition it consumes (and the journal holds ``at_least`` messages); returns
    the high-water marks.  Fails at once when the process has exited."""
    config = node.config
    groups = [
        (
            section.name,
            CategoryMatcher(section.group.categories),
            build_coordinator(config, section.name),
        )
        for section in config.consumers
    ]
    deadline = trio.current_time() + timeout_s
    behind: dict[str, Any] = {}
    while True:
        marks = {info.pid: info.high_water_mark or 0 for info in list_partitions(node.journal_dir)}
        behind = {}
        for name, matches, coordinator in groups:
            committed = await coordinator.all_committed()
            for pid, mark in marks.items():
                if matches(pid.category) and committed.get(pid) != mark:
                    behind[f"{name} {pid}"] = (committed.get(pid), mark)
        if not behind and sum(marks.values()) >= at_least:
            return marks
        if not node.process.running():
            code = node.process.proc.returncode if node.process.proc else None
            raise AssertionError(
                f"{label}: {node.name}'s pipeline run exited ({code}) before catching up: {behind}"
            )
        if trio.current_time() > deadline:
            raise AssertionError(
                f"{label}: {node.name} not caught up after {timeout_s:.0f} s "
                f"(group partition: (committed, high-water mark)): {behind}; "
                f"process running: {node.process.running()}"
            )
        await trio.sleep(0.25)


async def lag(node: Node, group: str) -> int:
    """Messages journaled but not committed by ``group`` (which consumes every category)."""
    committed = await build_coordinator(node.config, group).all_committed()
    return sum(
        (info.high_water_mark or 0) - (committed.get(info.pid) or 0)
        for info in list_partitions(node.journal_dir)
    )


async def committed_total(node: Node, group: str) -> int:
    committed = await build_coordinator(node.config, group).all_committed()
    return sum(offset or 0 for offset in committed.values())


async def wait_committed(node: Node, group: str, *, at_least: int, timeout_s: float) -> None:
    """Poll until ``group`` of ``node`` has committed ``at_least`` messages in all."""
    deadline = trio.current_time() + timeout_s
    while True:
        total = await committed_total(node, group)
        if total >= at_least:
            return
        if trio.current_time() > deadline:
            raise AssertionError(f"{node.name}: {group} committed {total} < {at_least}")
        await trio.sleep(0.25)


# -- 1. exactly once in effect, through SIGKILLs and a full replay --------------------------------

KILL_ROUNDS = 12
CLIENTS = 4
PER_CLIENT = 6000

ROUTES_1 = """
[[routing.routes]]
category = "once.a"
partitions = 3
partitioner = "round-robin"

[[routing.routes]]
category = "default"
partitions = 1
"""


@pytest.mark.timeout(420)
async def test_sigkilled_pipeline_materializes_every_event_exactly_once_and_replays_unchanged(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    """Four clients send 24,000 messages to ``pipeline run`` (server and an ``events`` group)
    over twelve rounds, each ended by a SIGKILL at a random moment and followed by a restart;
    clients resend what was not acknowledged.  Once the group caught up, ``events`` holds one
    row per journal position with the journal's content; an ``offsets reset --to earliest``
    and a second catch-up (a full replay) leave every row and write time as it was.
    ``CRASH_SEED=<n>`` replays a failure's kill times (not the scheduling)."""
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    label = f"CRASH_SEED={seed}"
    node = nodes("once", events_group(), ROUTES_1)
    server = node.process
    senders = [
        Sender("once", cid, [b"once.a", b"once.b"], PER_CLIENT, max_batch=60, pace_s=0.05)
        for cid in range(CLIENTS)
    ]
    total = CLIENTS * PER_CLIENT
    kills: list[float] = []
    behind = 0  # kills while the consumer had not committed everything journaled
    began = time.monotonic()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for sender in senders:
                nursery.start_soon(sender.run, lambda: server.address)
            for round_no in range(KILL_ROUNDS):
                for sender in senders:
                    sender.allowed = sender.total * (round_no + 1) // (KILL_ROUNDS + 1)
                await server.astart()
                # A random moment: while the server takes the round's messages, while the
                # consumer starts, writes to Cassandra or commits, or while it idles.
                delay = rng.uniform(0.05, 2.5)
                await trio.sleep(delay)
                assert server.running(), f"{label}: round {round_no}: pipeline run died"
                behind += await lag(node, "events") > 0
                await server.akill()
                kills.append(delay)
            for sender in senders:
                sender.allowed = sender.total
            await server.astart()
    # The nursery is done: every message was acknowledged.
    marks = await wait_caught_up(node, timeout_s=120, label=label, at_least=total)
    churn_s = time.monotonic() - began

    journal_id = node.journal_id()
    contents = journal_contents(node.journal_dir)
    counts = check_acknowledged(senders, contents, label)
    keyspace = cassandra_config.keyspace
    before = await event_rows(cassandra, keyspace)
    assert_no_problems(row_problems(before, {journal_id: contents}), f"{label} after the kills")
    assert len(before) == len(contents) == sum(marks.values()) >= total
    letters = await list_dead_letters(cassandra, keyspace, "events")
    assert letters == [], f"{label}: dead letters: {letters[:5]}"

    # A full replay from offset 0 rewrites the same cells: rows and write times unchanged.
    assert await server.aterminate() == 0
    reset = await trio.to_thread.run_sync(
        lambda: run_pipeline(
            "offsets",
            "reset",
            "--config",
            node.config_path,
            "--group",
            "events",
            "--to",
            "earliest",
        )
    )
    assert reset.returncode == 0, reset.stderr.decode()
    moved = [json.loads(line) for line in reset.stdout.decode().splitlines()]
    assert len(moved) == len(marks) and all(m["offset"] == 0 for m in moved), moved
    replay_began = time.monotonic()
    await server.astart()
    await wait_caught_up(node, timeout_s=120, label=f"{label} replay", at_least=total)
    replay_s = time.monotonic() - replay_began
    counters = await server.counters()
    after = await event_rows(cassandra, keyspace)
    assert await server.aterminate() == 0

    replayed = counters.get("consumer events:messages consumed", 0)
    print(
        f"\n{label}: {KILL_ROUNDS} SIGKILLs (after {', '.join(f'{k:.1f}' for k in kills)} s; "
        f"{behind} while the consumer was behind), "
        f"{total} messages acknowledged, {len(contents)} journaled "
        f"({sum(n - 1 for n in counts.values())} resent duplicates), {len(before)} rows; "
        f"churn and catch-up {churn_s:.1f} s; replay of {replayed} messages {replay_s:.1f} s"
    )
    for sender in senders:
        print("  " + sender.summary())
    assert replayed >= len(contents), f"the replay consumed {replayed} of {len(contents)}"
    old = {row.position: row for row in before}
    new = {row.position: row for row in after}
    changed = [
        (old.get(p), new.get(p)) for p in old.keys() | new.keys() if old.get(p) != new.get(p)
    ]
    assert not changed, f"{len(changed)} rows changed by the replay, e.g. {changed[:3]}"


# -- 2. Cassandra down for 30 s mid-stream ---------------------------------------------------------

OUTAGE_S = 30.0


def _quiet(_message: str) -> None:
    pass


@pytest.fixture
async def restartable_cassandra(
    cassandra_config: CassandraConfig,
) -> AsyncIterator[ManagedCassandra]:
    """The shared Cassandra of `pipeline services start`, to stop; it is running again when the
    test ends, passed or failed (every later test needs it), and the test's keyspace is gone."""
    server = managed_cassandra()
    if server.managed_pid() is None or (server.host, server.port) != (
        cassandra_config.hosts[0],
        cassandra_config.port,
    ):
        pytest.skip("needs the Cassandra that `pipeline services start` started here")
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            # Reuses a running server, starts a stopped one; waits until CQL answers.
            await trio.to_thread.run_sync(server.start, _quiet, 240.0)
            async with open_cassandra(cassandra_config) as session:
                await session.drop_keyspace(cassandra_config.keyspace)


@pytest.mark.timeout(420)
async def test_cassandra_outage_pauses_the_consumer_while_ingest_goes_on(
    nodes: Callable[..., Node],
    cassandra_config: CassandraConfig,
    restartable_cassandra: ManagedCassandra,
) -> None:
    """``pipeline run`` (server and ``events``) takes a steady stream from two clients while
    the shared Cassandra is stopped for 30 s and started again."""
    node = nodes("outage", events_group(), ROUTES_1.replace("once.a", "out.a"))
    server = node.process
    senders = [
        Sender("out", cid, [b"out.a", b"out.b"], 1_000_000, max_batch=20, pace_s=0.05)
        for cid in range(2)
    ]
    await server.astart()
    pid = server.pid
    keyspace = cassandra_config.keyspace
    async with trio.open_nursery() as nursery:
        for sender in senders:
            nursery.start_soon(sender.run, lambda: server.address)
        # Rows flow before the outage.
        await wait_committed(node, "events", at_least=200, timeout_s=60)
        stopping_at = trio.current_time()
        assert await trio.to_thread.run_sync(restartable_cassandra.stop, _quiet)
        down_at = trio.current_time()
        assert not port_accepts(restartable_cassandra.host, restartable_cassandra.port, 1.0)
        await trio.sleep(OUTAGE_S)
        # Still down: the journal grew, the group's committed offsets could not follow.
        lag_in_outage = await lag(node, "events")
        starting_at = trio.current_time()
        await trio.to_thread.run_sync(restartable_cassandra.start, _quiet, 240.0)
        up_at = trio.current_time()
        await trio.sleep(2.0)
        for sender in senders:
            sender.stop = True
    stopped_sending = trio.current_time()
    total = sum(s.acked for s in senders)
    await wait_caught_up(node, timeout_s=180, label="after the outage", at_least=total)
    resumed_after = trio.current_time() - up_at
    counters = await server.counters()
    assert server.running() and server.pid == pid, "pipeline run restarted or died"

    outcomes = sorted(o for s in senders for o in s.outcomes)
    failed = [(round(t - down_at, 2), what) for t, what in outcomes if what != "ok"]
    in_outage = [t for t, what in outcomes if stopping_at <= t <= up_at and what == "ok"]
    gaps = [b - a for a, b in itertools.pairwise(in_outage)]
    print(
        f"\nCassandra stopped in {down_at - stopping_at:.1f} s, down {starting_at - down_at:.1f} s,"
        f" started in {up_at - starting_at:.1f} s; {len(in_outage)} Log calls acknowledged "
        f"meanwhile (longest gap {max(gaps, default=0):.2f} s); lag at the end of the outage "
        f"{lag_in_outage}; caught up {resumed_after:.1f} s after Cassandra answered "
        f"({stopped_sending - up_at:.1f} s of sending after it); {total} messages; sink retries "
        f"{counters.get('consumer events:sink retries')}"
    )
    # Ingest never stopped: every call was acknowledged, during the outage too.
    assert failed == [], f"Log calls not acknowledged (s after the stop, outcome): {failed[:10]}"
    assert len(in_outage) >= 10, f"only {len(in_outage)} Log calls acknowledged in the outage"
    # The consumer paused (its sink failed and retried, the lag grew) and resumed by itself.
    assert counters.get("consumer events:sink retries", 0) > 0, counters
    assert lag_in_outage > 0
    contents = journal_contents(node.journal_dir)
    counts = check_acknowledged(senders, contents, "outage")
    assert max(counts.values()) == 1, "a message journaled twice, though every call was OK"
    async with open_cassandra(cassandra_config) as session:
        rows = await event_rows(session, keyspace)
        letters = await list_dead_letters(session, keyspace, "events")
    assert_no_problems(row_problems(rows, {node.journal_id(): contents}), "after the outage")
    assert len(rows) == len(contents) == total
    assert letters == [], f"the outage made dead letters: {letters[:5]}"
    assert await server.aterminate() == 0


class SlowSchemaProxy:
    """A TCP proxy on 127.0.0.1:``port`` to Cassandra: nothing listens until `serve` runs;
    then it holds each request that changes the schema (a chunk holding ``CREATE TABLE``; the
    driver sends uncompressed frames here) ``delay_s`` before passing it on, as a loaded
    cluster is slow to agree on a schema change."""

    MARKER = b"CREATE TABLE"

    def __init__(self, port: int, upstream: tuple[str, int], delay_s: float) -> None:
        self.port = port
        self.upstream = upstream
        self.delay_s = delay_s
        self.held = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self.upstream)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, upstream, True, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, False, nursery.cancel_scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        hold: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                if hold and self.MARKER in chunk:
                    self.held += 1
                    await trio.sleep(self.delay_s)
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


ROUTES_LATE = """
[[routing.routes]]
category = "late"
partitions = 8
partitioner = "round-robin"
"""


@pytest.mark.timeout(180)
async def test_a_pipeline_started_while_cassandra_is_unreachable_writes_once_it_answers(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    """``pipeline run`` starts while its Cassandra (a proxy, not listening yet) is unreachable:
    the server acknowledges, the group's eight partitions pause and retry.  Then Cassandra
    answers, slow to create tables (a loaded cluster): one partition's retry starts the sink
    (schema, prepared statements) while the others keep retrying.  Every event must end up in
    ``events``, none in ``dead_letters``, and the process must keep running."""
    proxy = SlowSchemaProxy(free_port(), (cassandra_config.hosts[0], cassandra_config.port), 2.0)
    node = nodes("late", events_group(), ROUTES_LATE, cassandra_port=proxy.port)
    await node.process.astart()
    senders = [Sender("late", 0, [b"late"], 2000)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(senders[0].run, lambda: node.process.address)
    await trio.sleep(2.0)  # every partition has failed to start the sink, and retries
    log = node.process.new_log().decode()
    assert "Cassandra unreachable" in log and "sink failed; partition paused" in log, log[-3000:]
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            await wait_caught_up(node, timeout_s=60, label="late start", at_least=2000)
        finally:
            if node.process.running():
                await node.process.aterminate()
            nursery.cancel_scope.cancel()
    assert proxy.held >= 1, "no CREATE TABLE went through the proxy"
    letters = await list_dead_letters(cassandra, cassandra_config.keyspace, "events")
    reasons = Counter(letter.error for letter in letters)
    assert not letters, f"{len(letters)} good events dead-lettered: {dict(reasons)}"
    contents = journal_contents(node.journal_dir)
    check_acknowledged(senders, contents, "late start")
    rows = await event_rows(cassandra, cassandra_config.keyspace)
    assert_no_problems(row_problems(rows, {node.journal_id(): contents}), "late start")


# -- 3. two log servers, one table -----------------------------------------------------------------

ROUTES_TWIN = """
[[routing.routes]]
category = "twin"
partitions = 2
partitioner = "round-robin"
"""


@pytest.mark.timeout(180)
async def test_two_log_servers_write_their_own_rows_into_one_table(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    one = nodes("one", events_group(), ROUTES_TWIN)
    two = nodes("two", events_group(), ROUTES_TWIN)
    await one.process.astart()
    await two.process.astart()
    # The same clients send the same messages to both servers at the same time.
    senders = {
        node.name: [Sender("twin", cid, [b"twin"], 2500, max_batch=50) for cid in range(2)]
        for node in (one, two)
    }
    async with trio.open_nursery() as nursery:
        for node in (one, two):
            for sender in senders[node.name]:
                nursery.start_soon(sender.run, lambda node=node: node.process.address)
    total = sum(s.acked for s in senders["one"])
    for node in (one, two):
        await wait_caught_up(node, timeout_s=90, label="twins", at_least=total)
    ids = {node.name: node.journal_id() for node in (one, two)}
    assert ids["one"] != ids["two"], "two journals with one identity"
    ls = await trio.to_thread.run_sync(
        lambda: run_pipeline("journal", "ls", "--journal-dir", one.journal_dir)
    )
    assert str(ids["one"]) in ls.stdout.decode(), ls.stdout.decode()
    contents = {node.name: journal_contents(node.journal_dir) for node in (one, two)}
    for node in (one, two):
        counts = check_acknowledged(senders[node.name], contents[node.name], node.name)
        assert set(counts.values()) == {1} and len(counts) == total
    rows = await event_rows(cassandra, cassandra_config.keyspace)
    by_journal = Counter(row.journal_id for row in rows)
    same_ms = Counter((r.category, r.event_time_ms) for r in rows)
    print(
        f"\ntwo servers, {total} identical messages each: rows per journal {dict(by_journal)}; "
        f"{sum(1 for n in same_ms.values() if n > 1)} milliseconds hold rows of both or several"
    )
    assert_no_problems(
        row_problems(rows, {ids[name]: contents[name] for name in ("one", "two")}), "two servers"
    )
    assert by_journal == {ids["one"]: total, ids["two"]: total}
    # Both rows of each message exist, one per server.
    per_message = Counter(row.message for row in rows)
    assert set(per_message.values()) == {2}
    for node in (one, two):
        assert await node.process.aterminate() == 0


# -- 4. tiers: a leaf forwarding to two aggregators ------------------------------------------------

# The leaf journals ``tier`` in three partitions, other categories in one; aggregators journal
# everything in one partition, so an event's position there is never its position at the leaf.
ROUTES_LEAF = """
[[routing.routes]]
category = "tier"
partitions = 3
partitioner = "round-robin"

[[routing.routes]]
category = "default"
partitions = 1
"""


@pytest.mark.timeout(240)
async def test_forwarded_events_keep_the_leaf_origin_and_redundant_aggregators_write_one_row(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    """leaf --to-aggregator1--> aggregator1 --onward--> aggregator2, and leaf --to-aggregator2-->
    aggregator2: both aggregators materialize into ``events``, aggregator2 gets every event
    twice, and the leaf's own group materializes the same events into ``leaf_events``.  The
    rows of ``events`` must be the leaf's rows exactly: one per leaf journal position."""
    ports = free_port(), free_port()
    aggregator2 = nodes("aggregator2", events_group(), port=ports[1])
    aggregator1 = nodes(
        "aggregator1", events_group() + forward_group("onward", ports[1]), port=ports[0]
    )
    leaf = nodes(
        "leaf",
        forward_group("to-aggregator1", ports[0])
        + forward_group("to-aggregator2", ports[1])
        + events_group("leaf-events", "leaf_events"),
        ROUTES_LEAF,
    )
    for node in (aggregator2, aggregator1, leaf):
        await node.process.astart()
    senders = [Sender("tier", cid, [b"tier", b"tier.other"], 2000) for cid in range(2)]
    async with trio.open_nursery() as nursery:
        for sender in senders:
            nursery.start_soon(sender.run, lambda: leaf.process.address)
    total = sum(s.acked for s in senders)
    for node, copies in ((leaf, 1), (aggregator1, 1), (aggregator2, 2)):
        await wait_caught_up(node, timeout_s=90, label="tiers", at_least=copies * total)

    leaf_id = leaf.journal_id()
    contents = journal_contents(leaf.journal_dir)
    check_acknowledged(senders, contents, "leaf")
    assert {c for c, _, _ in contents} == {b"tier", b"tier.other"}
    for aggregator, copies in ((aggregator1, 1), (aggregator2, 2)):
        # Each aggregator journaled every event (a duplicate only after a broken call).
        forwarded = Counter(
            (c, m.message) for (c, _, _), m in journal_contents(aggregator.journal_dir).items()
        )
        sent = {(c, m) for s in senders for m, c in s.acked_messages().items()}
        assert set(forwarded) == sent, aggregator.name
        assert min(forwarded.values()) >= copies, aggregator.name
    keyspace = cassandra_config.keyspace
    rows = await event_rows(cassandra, keyspace)
    at_leaf = await event_rows(cassandra, keyspace, "leaf_events")
    written = []
    for aggregator in (aggregator1, aggregator2):
        counters = await aggregator.process.counters()
        written.append(counters.get("consumer events:sink rows written", 0))
    print(
        f"\nleaf {leaf_id} -> {aggregator1.journal_id()}, {aggregator2.journal_id()}: {total} "
        f"events, {len(rows)} rows in events, {len(at_leaf)} in leaf_events; rows written by "
        f"each aggregator {written}"
    )
    strays = Counter(row.journal_id for row in rows if row.journal_id != leaf_id)
    assert not strays, f"rows keyed by an aggregator's journal, not the leaf's: {strays}"
    assert_no_problems(row_problems(at_leaf, {leaf_id: contents}), "leaf_events, at the leaf")
    # Materialized two tiers away, an event is the row it is at the leaf.
    leaf_rows = {row.position: row for row in at_leaf}
    differ = [(leaf_rows.get(r.position), r) for r in rows if leaf_rows.get(r.position) != r]
    assert not differ, (
        f"{len(differ)} rows differ from the leaf's own (leaf row, aggregators' row): {differ[:3]}"
    )
    assert_no_problems(row_problems(rows, {leaf_id: contents}), "events, at the aggregators")
    assert len(rows) == len(contents) == total
    # Both aggregators wrote every event (aggregator2 twice): the same rows again, unchanged.
    assert written[0] >= total and written[1] >= 2 * total, written
    for node in (leaf, aggregator1, aggregator2):
        assert await node.process.aterminate() == 0


# How long the failure test keeps one aggregator stopped (the figure).
AGGREGATOR_DOWN_S = 30.0


@pytest.mark.timeout(300)
async def test_a_leaf_outlives_a_stopped_and_a_killed_aggregator_and_every_event_is_one_row(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    """leaf --> aggregator1 and leaf --> aggregator2, both materializing into ``events``, while
    events flow: aggregator1 is stopped for 30 s and aggregator2 is SIGKILLed and restarted.
    The leaf keeps acknowledging throughout, both forward groups catch up once their
    aggregator is back, and ``events`` holds every acknowledged event exactly once, keyed by
    its leaf position."""
    ports = free_port(), free_port()
    aggregator1 = nodes("aggregator1", events_group(), port=ports[0])
    aggregator2 = nodes("aggregator2", events_group(), port=ports[1])
    leaf = nodes(
        "leaf",
        forward_group("to-aggregator1", ports[0]) + forward_group("to-aggregator2", ports[1]),
        ROUTES_LEAF,
    )
    for node in (aggregator1, aggregator2, leaf):
        await node.process.astart()
    # Paced so that events flow through the whole outage (about 40 s).
    senders = [
        Sender("outage", cid, [b"tier", b"tier.other"], 3000, pace_s=0.25) for cid in range(2)
    ]

    def acked() -> int:
        return sum(s.acked for s in senders)

    async with trio.open_nursery() as nursery:
        for sender in senders:
            nursery.start_soon(sender.run, lambda: leaf.process.address)
        await trio.sleep(3)
        assert await aggregator1.process.aterminate() == 0
        stopped_at, acked_at_stop = trio.current_time(), acked()
        await trio.sleep(5)
        await aggregator2.process.akill()
        await trio.sleep(2)
        await aggregator2.process.astart()
        await trio.sleep_until(stopped_at + AGGREGATOR_DOWN_S)
        acked_while_down = acked() - acked_at_stop
        await aggregator1.process.astart()
    total = acked()
    print(
        f"\n{total} events acknowledged by the leaf, {acked_while_down} of them while "
        f"aggregator1 was down; {' '.join(s.summary() for s in senders)}"
    )
    assert acked_while_down > 0, "the leaf stopped acknowledging while an aggregator was down"
    assert all(s.try_later == 0 and s.broken == 0 for s in senders), "the leaf refused calls"

    await wait_caught_up(leaf, timeout_s=120, label="leaf forwards", at_least=total)
    for aggregator in (aggregator1, aggregator2):
        await wait_caught_up(aggregator, timeout_s=90, label=aggregator.name, at_least=total)
    leaf_id = leaf.journal_id()
    contents = journal_contents(leaf.journal_dir)
    check_acknowledged(senders, contents, "leaf")
    rows = await event_rows(cassandra, cassandra_config.keyspace)
    assert_no_problems(row_problems(rows, {leaf_id: contents}), "events, after the outage")
    assert len(rows) == len(contents) == total
    for node in (leaf, aggregator1, aggregator2):
        assert await node.process.aterminate() == 0


ROUTES_CATCH_ALL = """
[routing]
unroutable = "journal"

[[routing.routes]]
category = "tier"
partitions = 2
"""


@pytest.mark.timeout(120)
async def test_forwarded_catch_all_events_keep_the_category_the_client_sent(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    """A leaf journals a category it has no route for in its catch-all, the client's category
    in the metadata (``scribe_category``); materialized at the leaf, the row keeps it.  The
    same event forwarded to an aggregator must be materialized as the same row: otherwise the
    category the client sent is lost two tiers away (and a leaf and an aggregator writing one
    table disagree about the row's cells at the same write time)."""
    port = free_port()
    aggregator = nodes("aggregator", events_group(), port=port)
    leaf = nodes(
        "leaf",
        forward_group("to-aggregator", port) + events_group("leaf-events", "leaf_events"),
        ROUTES_CATCH_ALL,
    )
    for node in (aggregator, leaf):
        await node.process.astart()
    senders = [Sender("stray", 0, [b"tier", b"stray"], 400)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(senders[0].run, lambda: leaf.process.address)
    for node in (leaf, aggregator):
        await wait_caught_up(node, timeout_s=60, label="catch-all tiers", at_least=400)
    contents = journal_contents(leaf.journal_dir)
    check_acknowledged(senders, contents, "leaf")
    assert {c for c, _, _ in contents} == {b"tier", b"scribe_unroutable"}
    keyspace = cassandra_config.keyspace
    at_leaf = {row.position: row for row in await event_rows(cassandra, keyspace, "leaf_events")}
    rows = await event_rows(cassandra, keyspace)
    assert_no_problems(row_problems(list(at_leaf.values()), {leaf.journal_id(): contents}), "leaf")
    assert set(at_leaf) == {row.position for row in rows}
    differ = [(at_leaf[r.position], r) for r in rows if at_leaf[r.position] != r]
    assert not differ, (
        f"{len(differ)} of {len(rows)} forwarded rows differ from the leaf's own "
        f"(leaf row, aggregator row): {differ[:2]}"
    )
    for node in (leaf, aggregator):
        assert await node.process.aterminate() == 0


# -- 5. dead letters end to end --------------------------------------------------------------------

READINGS_TABLE = (
    "CREATE TABLE {keyspace}.readings (device text, seq bigint, value double,"
    " src_partition int, src_offset bigint, PRIMARY KEY (device, seq))"
)

# ``readings`` (two partitions) feeds a mapping group, ``state`` a latest group.  ``state`` has
# one partition, as latest asks of a key's events: event times increase strictly only along a
# partition, so only there is "the newest event of a key" well defined.
POISON_CONFIG = f"""
[[routing.routes]]
category = "readings"
partitions = 2
partitioner = "round-robin"

[[routing.routes]]
category = "default"
partitions = 1

[[consumers]]
name = "readings"
categories = ["readings"]
sink = "cassandra"
{GROUP_TUNING}
[consumers.cassandra]
materializer = "mapping"
table = "readings"
[consumers.cassandra.columns]
device = "device"
seq = "seq"
value = "value"
src_partition = "@partition"
src_offset = "@offset"

[[consumers]]
name = "state"
categories = ["state"]
sink = "cassandra"
{GROUP_TUNING}
[consumers.cassandra]
materializer = "latest"
table = "latest"
key_field = "device"
"""

# Kind of message -> why mapping rejects it, why latest rejects it (None: accepted).
KINDS: dict[str, tuple[str | None, str | None]] = {
    "good": (None, None),
    "not_json": ("not valid JSON", "not valid JSON"),
    "array": ("JSON message is not an object", "JSON message is not an object"),
    "no_key": ("field 'device' for key column 'device' is missing", "no key field 'device'"),
    "wrong_type": ("field 'seq' -> column 'seq'", None),
    "object_key": ("field 'device' -> column 'device'", "key field 'device' is not a scalar"),
    # Cassandra itself refuses an empty partition key (latest's key is (category, key): fine).
    "empty_key": ("Cassandra refused", None),
}
POISON = [kind for kind in KINDS if kind != "good"]
GROUPS_5 = {b"readings": ("readings", 0, "mapping"), b"state": ("state", 1, "latest")}


def reading(n: int, kind: str) -> bytes:
    device = f"d{n % 4}"
    body: Any
    if kind == "good":
        body = {"device": device, "seq": n, "value": n / 2}
    elif kind == "not_json":
        return b"not json %d" % n
    elif kind == "array":
        body = [n]
    elif kind == "no_key":
        body = {"seq": n, "value": 1.0}
    elif kind == "wrong_type":
        body = {"device": device, "seq": f"seq-{n}", "value": 2.0}
    elif kind == "object_key":
        body = {"device": {"id": n}, "seq": n}
    else:
        assert kind == "empty_key"
        body = {"device": "", "seq": n, "value": 3.0}
    return json.dumps(body).encode()


@pytest.mark.timeout(180)
async def test_poison_messages_become_dead_letters_and_their_partitions_move_on(
    nodes: Callable[..., Node], cassandra: CassandraSession, cassandra_config: CassandraConfig
) -> None:
    keyspace = cassandra_config.keyspace
    await cassandra.execute(READINGS_TABLE.format(keyspace=keyspace))
    node = nodes("poison", POISON_CONFIG)
    await node.process.astart()
    rng = random.Random(7)
    kinds: dict[bytes, str] = {}
    calls: list[list[bytes]] = []
    for start in range(0, 3000, 50):
        call = []
        for n in range(start, start + 50):
            kind = "good" if rng.random() < 0.8 else rng.choice(POISON)
            kinds[reading(n, kind)] = kind
            call.append(reading(n, kind))
        calls.append(call)
    # The last calls are poison only: every partition ends with messages nobody can materialize.
    for start in (3000, 3012):
        last = [reading(n, POISON[n % len(POISON)]) for n in range(start, start + 12)]
        kinds.update({m: POISON[n % len(POISON)] for n, m in enumerate(last, start)})
        calls.append(last)
    async with await AsyncScribeClient.connect(*node.process.address, 10.0) as client:
        for call in calls:
            for category in GROUPS_5:
                entries = [LogEntry(category, m) for m in call]
                for _ in range(100):
                    if await client.log(entries) is ResultCode.OK:
                        break
                    await trio.sleep(0.05)
                else:
                    raise AssertionError("the server kept answering TRY_LATER")
    marks = await wait_caught_up(node, timeout_s=90, label="poison", at_least=2 * len(kinds))

    journal_id = node.journal_id()
    contents = journal_contents(node.journal_dir)
    for category in GROUPS_5:
        journaled = sorted(m.message for (c, _, _), m in contents.items() if c == category)
        assert journaled == sorted(kinds), f"{category!r}: the journal is not what was sent"
    assert set(marks) == {
        PartitionId(b"readings", 0),
        PartitionId(b"readings", 1),
        PartitionId(b"state", 0),
    }
    for pid, mark in marks.items():
        tail = contents[(pid.category, pid.partition, mark - 1)]
        assert kinds[tail.message] != "good", f"{pid} does not end with poison"

    for category, (group, index, materializer) in GROUPS_5.items():
        letters = await list_dead_letters(cassandra, keyspace, group)
        expected = {
            (p, o): KINDS[kinds[m.message]][index]
            for (c, p, o), m in contents.items()
            if c == category and KINDS[kinds[m.message]][index] is not None
        }
        got = {(d.event.partition, d.event.offset): d for d in letters}
        assert set(got) == set(expected), (
            f"{group}: dead letters at {sorted(set(got) - set(expected))[:10]} unexpected, "
            f"missing at {sorted(set(expected) - set(got))[:10]}"
        )
        for key, letter in got.items():
            message = contents[(category, *key)].message
            assert letter.event.category == category
            assert letter.event.message == message
            assert letter.event.journal_id == journal_id
            assert letter.materializer == materializer
            assert expected[key] in letter.error, (
                f"{group}: {kinds[message]} message {message!r}: reason {letter.error!r}"
            )
        reasons = Counter(kinds[contents[(category, *key)].message] for key in got)
        print(f"\n{group} ({materializer}): {len(letters)} dead letters {dict(reasons)}")

    # The mapping wrote every good message, from its own position.
    mapped = await cassandra.execute(
        f"SELECT device, seq, value, src_partition, src_offset FROM {keyspace}.readings"
    )
    good = {
        (json.loads(m.message)["device"], json.loads(m.message)["seq"]): (p, o)
        for (c, p, o), m in contents.items()
        if c == b"readings" and kinds[m.message] == "good"
    }
    assert {(d, s): (p, o) for d, s, _, p, o in mapped.rows} == good
    assert all(v == s / 2 for _, s, v, _, _ in mapped.rows)
    # Latest kept, per key, the newest event it accepts (one partition: the highest offset).
    newest: dict[bytes, JournalMessage] = {}
    for (c, _, _), m in sorted(contents.items()):
        if c == b"state" and KINDS[kinds[m.message]][1] is None:
            newest[json.loads(m.message)["device"].encode()] = m
    latest = await cassandra.execute(
        f"SELECT key, message, offset, writetime(message) FROM {keyspace}.latest"
    )
    assert {bytes(k): (bytes(m), o, w) for k, m, o, w in latest.rows} == {
        k: (m.message, m.offset, m.timestamp_us) for k, m in newest.items()
    }
    assert await node.process.aterminate() == 0
