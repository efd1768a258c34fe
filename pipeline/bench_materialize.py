"""``pipeline bench materialize``: how fast events become Cassandra rows, against the driver.

One run, in a keyspace of its own (created first, dropped at the end), measures:

1. the Python driver alone on the ``events`` table shape, in the best form it allows: one
   prepared row per request and UNLOGGED batches of 10, 50 and 100 rows of one partition key,
   many requests in flight (``execute_async``, each next request started from the callback
   of one that finished);
2. `CassandraSink` fed journal batches of 1000 messages on several partitions at once (as the
   consumer runtime does), with the ``events``, ``latest`` and ``mapping`` materializers;
3. the whole consumer: `ConsumerRuntime`, `LocalCoordinator` and the sink draining a pre-filled
   journal, from start until every offset is committed;
4. end to end: ``pipeline run`` in a subprocess with an ``events`` group, a client offering a
   steady rate, and the time from ``Log`` answering OK until a marked event's row is readable.

Rows go to a few partition keys (one category per journal partition, one hour bucket), the same
for the bare loops and the sink, so the ratios compare like with like.  It is a load generator and
a measurement, never a test: the numbers depend on the machine, and Cassandra shares its cores.
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from consumers import ConsumerRuntime, GroupConfig, LocalCoordinator, LocalCoordinatorConfig
from consumers.cassandra import CassandraConfig, CassandraSession, Prepared, open_cassandra
from consumers.errors import StorageError
from consumers.sinks.cassandra import (
    CassandraSink,
    EventsMaterializer,
    EventsOptions,
    LatestMaterializer,
    LatestOptions,
    MappingMaterializer,
    MappingOptions,
    Materializer,
)
from consumers.sinks.cassandra.events import events_table
from journal import JournalConfig, JournalMessage, PartitionId, open_journal, read_journal_id
from scribe_compat import AsyncScribeClient, LogEntry, ResultCode, prepare_log

Progress = Callable[[str], None]

# Journal batches as the runtime hands them to the sink (GroupConfig.batch_messages).
SINK_BATCH = 1000
# The bare loops' batch sizes; the sink's default max_batch_rows is the largest.
BARE_BATCHES = (10, 50, 100)
# Distinct keys of the latest materializer (per partition): each row of a journal batch is its
# own Cassandra partition, as for a busy state stream.
LATEST_KEYS = 10_000
# End to end: every MARK_EVERY-th Log call's first message is timed; each category's oldest
# unseen mark is looked up every POLL_S (one LIMIT 1 read), so latencies are upper bounds
# within POLL_S plus one read.
E2E_BATCH = 100
E2E_CONNECTIONS = 4
MARK_EVERY = 5
POLL_S = 0.01
# How long the end-to-end phase waits for its server, its group and its last marks.
E2E_START_TIMEOUT_S = 60.0
E2E_DRAIN_TIMEOUT_S = 30.0


class BenchError(Exception):
    """The benchmark could not run (a phase failed, a server did not start)."""


@dataclass(frozen=True)
class MaterializeSettings:
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    # Each throughput phase stops after this many rows or duration_s, whichever comes first;
    # the whole-consumer phase drains a journal of exactly this many messages.
    rows: int = 300_000
    duration_s: float = 10.0
    message_bytes: int = 200
    # Single-row requests in flight: the bare loop's, and the sink session's max_in_flight.
    in_flight: int = 256
    # Batches of 100 rows in flight in the bare batch loops (smaller batches: as many rows).
    # More only queues inside Cassandra, and past a few MB unsent the driver refuses requests
    # ("connection overloaded").
    batch_in_flight: int = 64
    partitions: int = 4
    # End to end: events per second offered, over E2E_CONNECTIONS connections.
    rate: float = 20_000.0
    keyspace_prefix: str = "bench_materialize"
    work_dir: Path = Path("var")

    def __post_init__(self) -> None:
        # Absolute: the end-to-end phase's configuration file, written inside it, names paths
        # inside it (and relative paths in a configuration file are the file's).
        object.__setattr__(self, "work_dir", self.work_dir.absolute())


@dataclass
class Throughput:
    rows: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s),
        }


@dataclass
class ConsumerResult:
    rows: int
    seconds_written: float
    seconds_committed: float

    def summary(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "seconds_to_written": round(self.seconds_written, 3),
            "written_rows_per_s": round(self.rows / self.seconds_written),
            "seconds_to_committed": round(self.seconds_committed, 3),
            "rows_per_s": round(self.rows / self.seconds_committed),
        }


@dataclass
class EndToEndResult:
    rate: float
    seconds: float = 0.0
    messages: int = 0
    try_later: int = 0
    missing: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]

    def summary(self) -> dict[str, float | int]:
        return {
            "target_rate": self.rate,
            "offered_per_s": round(self.messages / self.seconds) if self.seconds else 0,
            "seconds": round(self.seconds, 3),
            "messages": self.messages,
            "try_later": self.try_later,
            "marks": len(self.latencies_ms),
            "missing": self.missing,
            "p50_ms": round(self.percentile(50), 1),
            "p99_ms": round(self.percentile(99), 1),
            "max_ms": round(max(self.latencies_ms, default=0.0), 1),
        }


@dataclass
class MaterializeReport:
    settings: MaterializeSettings
    keyspace: str
    bare: dict[str, Throughput] = field(default_factory=dict)
    sink: dict[str, Throughput] = field(default_factory=dict)
    consumer: ConsumerResult | None = None
    e2e: EndToEndResult | None = None

    def ratios(self) -> dict[str, float]:
        """Each sink figure against its ceiling: the best bare batch size for ``events``,
        bare single rows for ``latest`` and ``mapping`` (their rows are one per partition)."""
        single = self.bare["single"].rows_per_s
        best_batch = max(self.bare[f"batch_{n}"].rows_per_s for n in BARE_BATCHES)

        def ratio(value: float, ceiling: float) -> float:
            return round(value / ceiling, 3) if ceiling else 0.0

        return {
            "events_vs_bare_batch": ratio(self.sink["events"].rows_per_s, best_batch),
            "latest_vs_bare_single": ratio(self.sink["latest"].rows_per_s, single),
            "mapping_vs_bare_single": ratio(self.sink["mapping"].rows_per_s, single),
        }

    def targets(self) -> dict[str, bool]:
        """DESIGN.md's targets: 80% of the ceiling, and p99 under 1 s with no mark lost."""
        met = {name.split("_vs_")[0]: value >= 0.8 for name, value in self.ratios().items()}
        e2e = self.e2e
        met["e2e_p99_under_1s"] = (
            e2e is not None and not e2e.missing and 0 < e2e.percentile(99) < 1000
        )
        return met

    def summary(self) -> dict[str, Any]:
        s = self.settings
        return {
            "keyspace": self.keyspace,
            "message_bytes": s.message_bytes,
            "partitions": s.partitions,
            "in_flight": s.in_flight,
            "batch_in_flight": {f"batch_{n}": batch_depth(s, n) for n in BARE_BATCHES},
            "bare": {name: t.summary() for name, t in self.bare.items()},
            "sink": {name: t.summary() for name, t in self.sink.items()},
            "consumer": self.consumer.summary() if self.consumer else None,
            "e2e": self.e2e.summary() if self.e2e else None,
            "ratios": self.ratios(),
            "targets_met": self.targets(),
        }


# -- messages ---------------------------------------------------------------------------------


def _bodies(message_bytes: int, count: int = SINK_BATCH) -> list[bytes]:
    return [os.urandom(message_bytes // 2 + 1).hex().encode()[:message_bytes] for _ in range(count)]


def _json_body(fields: str, message_bytes: int) -> bytes:
    """A JSON object with ``fields``, padded with a ``pad`` field to ``message_bytes``."""
    head = "{" + fields + ',"pad":"'
    return (head + "x" * max(0, message_bytes - len(head) - 2) + '"}').encode()


MessageFactory = Callable[[int, int], bytes]


def _batches(
    settings: MaterializeSettings, base_us: int, body: MessageFactory
) -> dict[PartitionId, list[list[JournalMessage]]]:
    """Journal batches of SINK_BATCH per partition: one to warm up, then ``settings.rows``
    messages over all partitions."""
    count = 1 + math.ceil(settings.rows / settings.partitions / SINK_BATCH)
    out: dict[PartitionId, list[list[JournalMessage]]] = {}
    for p in range(settings.partitions):
        out[PartitionId(b"bench%d" % p, 0)] = [
            [
                JournalMessage(o, (base_us + o) // 1000, body(p, o), None, base_us + o)
                for o in range(start, start + SINK_BATCH)
            ]
            for start in range(0, count * SINK_BATCH, SINK_BATCH)
        ]
    return out


@contextmanager
def _collector_off_old_objects() -> Iterator[None]:
    """Measure as in a small process: the garbage collector's full passes skip what exists
    now (this program's modules, built batches), as they would in a consumer whose heap is
    little more than the batches in flight."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# -- 1. the bare driver -----------------------------------------------------------------------


BarePhase = tuple[str, int, int]  # name, rows per request, requests in flight


def _keep_in_flight(session: Any, requests: Iterator[tuple[Any, Any]], in_flight: int) -> None:
    """Blocking: run ``requests`` (statement, parameters) with ``in_flight`` outstanding, each
    next one started from the driver's callback of one that finished; returns once all have
    finished, raises the first error.

    The fastest form of the driver we found: `cassandra.concurrent.execute_concurrent` keeps
    every result and reaches about two thirds of this with single rows; a timeout per request
    (which the sink needs) costs about a tenth.
    """
    lock = threading.Lock()
    finished = threading.Event()
    local = threading.local()
    free, pending, exhausted = in_flight, 0, False
    errors: list[BaseException] = []

    def pump() -> None:
        nonlocal free, pending, exhausted
        if getattr(local, "pumping", False):
            return  # a callback run by add_callbacks inside this loop: the loop goes on
        local.pumping = True
        try:
            while True:
                with lock:
                    if not (errors or exhausted) and free:
                        item = next(requests, None)
                        exhausted = item is None
                    if errors or exhausted or not free:
                        if not pending and (errors or exhausted):
                            finished.set()
                        return
                    free -= 1
                    pending += 1
                assert item is not None
                try:
                    # No timeout (the driver's execute_concurrent sends none either): a timer per
                    # request is work the ceiling should not do.  The sink keeps its timeouts.
                    future = session.execute_async(*item, timeout=None)
                except Exception as exc:
                    failed(exc)
                    continue
                future.add_callbacks(done, failed)
        finally:
            local.pumping = False

    def done(_rows: Any) -> None:
        nonlocal free, pending
        with lock:
            free += 1
            pending -= 1
        pump()

    def failed(exc: BaseException) -> None:
        nonlocal pending
        with lock:
            pending -= 1
            errors.append(exc)
        pump()

    pump()
    finished.wait()
    if errors:
        raise errors[0]


def batch_depth(settings: MaterializeSettings, size: int) -> int:
    """Batches of ``size`` rows in flight: as many rows as ``batch_in_flight`` batches of 100."""
    return max(1, settings.batch_in_flight * max(BARE_BATCHES) // size)


def bare_phases(settings: MaterializeSettings, *, batches: bool) -> list[BarePhase]:
    if batches:
        return [(f"batch_{n}", n, batch_depth(settings, n)) for n in BARE_BATCHES]
    return [("single", 1, settings.in_flight)]


def _bare_driver(
    settings: MaterializeSettings, keyspace: str, phases: Sequence[BarePhase], progress: Progress
) -> dict[str, Throughput]:
    """Blocking, in a worker thread: the driver with nothing of ours around it.

    This benchmark's yardstick is the one place outside `consumers.cassandra` that uses
    cassandra-driver: it must not go through our adapter.  Connection settings are the
    adapter's (protocol, token-aware routing, consistency), so the two are comparable.
    """
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
    from cassandra.query import BatchStatement, BatchType, tuple_factory

    config = _cassandra_config(settings, keyspace)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        request_timeout=config.request_timeout_s,
        row_factory=tuple_factory,
        consistency_level=config.consistency.level,
    )
    cluster = Cluster(
        contact_points=list(config.hosts),
        port=config.port,
        protocol_version=config.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        session = cluster.connect()
        spec = events_table("bare_events")
        session.execute(spec.create_cql(keyspace))  # IF NOT EXISTS
        # The columns the events materializer writes for a message without metadata, and the
        # event's write time.
        insert = session.prepare(
            f"INSERT INTO {keyspace}.bare_events (category, bucket, event_time, journal_id,"
            " partition, offset, message) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        journal_id = uuid.uuid4()
        bodies = _bodies(settings.message_bytes)
        base_us = int(time.time() * 1_000_000)
        base_ms = base_us // 1000
        bucket = base_ms - base_ms % 3_600_000
        categories = [b"bench%d" % p for p in range(settings.partitions)]
        offset = 0

        def values(category: bytes, o: int) -> tuple[Any, ...]:
            return (
                category,
                bucket,
                (base_us + o) // 1000,
                journal_id,
                0,
                o,
                bodies[o % SINK_BATCH],
                base_us + o,
            )

        def requests(rows_per_request: int, rows: int, seconds: float) -> Iterator[Any]:
            nonlocal offset
            stop_at = time.perf_counter() + seconds
            for index in range(max(1, rows // rows_per_request)):
                if time.perf_counter() >= stop_at:
                    return
                category = categories[index % len(categories)]
                start, offset = offset, offset + rows_per_request
                if rows_per_request == 1:
                    yield insert, values(category, start)
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for o in range(start, offset):
                    batch.add(insert.bind(values(category, o)))
                yield batch, None

        def measure(name: str, rows_per_request: int, in_flight: int) -> Throughput:
            # Warm up (connections, the server's JIT), then measure.
            warm = 4 * in_flight * rows_per_request
            _keep_in_flight(
                session, requests(rows_per_request, warm, settings.duration_s), in_flight
            )
            with _collector_off_old_objects():
                start_offset, start = offset, time.perf_counter()
                _keep_in_flight(
                    session,
                    requests(rows_per_request, settings.rows, settings.duration_s),
                    in_flight,
                )
                result = Throughput(offset - start_offset, time.perf_counter() - start)
            progress(
                f"  bare driver, {name}, {in_flight} in flight: {result.rows_per_s:,.0f} rows/s"
            )
            return result

        return {name: measure(name, size, depth) for name, size, depth in phases}
    except Exception as exc:
        raise BenchError(f"bare driver loop failed: {exc!r}") from exc
    finally:
        cluster.shutdown()


# -- 2. the sink ------------------------------------------------------------------------------


def _cassandra_config(settings: MaterializeSettings, keyspace: str) -> CassandraConfig:
    return CassandraConfig(
        hosts=settings.hosts,
        port=settings.port,
        keyspace=keyspace,
        max_in_flight=settings.in_flight,
        # A saturated single node answers slowly; a timeout would only restart the batch.
        request_timeout_s=60.0,
    )


async def _drive_sink(
    sink: CassandraSink,
    batches: dict[PartitionId, list[list[JournalMessage]]],
    seconds: float,
) -> Throughput:
    """Each partition's batches written one after the other, all partitions at once, until
    they run out or ``seconds`` pass.  The first batch of each partition warms up."""
    async with trio.open_nursery() as nursery:
        for pid, todo in batches.items():
            nursery.start_soon(sink.write, pid, todo[0])
    result = Throughput()
    stop_at = time.perf_counter() + seconds

    async def partition(pid: PartitionId, todo: list[list[JournalMessage]]) -> None:
        for batch in todo[1:]:
            if time.perf_counter() >= stop_at:
                return
            await sink.write(pid, batch)
            result.rows += len(batch)

    with _collector_off_old_objects():
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for pid, todo in batches.items():
                nursery.start_soon(partition, pid, todo)
        result.seconds = time.perf_counter() - start
    if sink.metrics()["dead letters"]:
        raise BenchError(f"the {sink.materializer.name} sink wrote dead letters: {sink.metrics()}")
    return result


async def _sink_phase(
    session: CassandraSession,
    settings: MaterializeSettings,
    materializer: Materializer,
    body: MessageFactory,
    progress: Progress,
) -> Throughput:
    sink = CassandraSink(
        session,
        materializer,
        group=f"bench-{materializer.name}",
        journal_id=uuid.uuid4(),
        config=session.config,
    )
    await sink.start()
    batches = _batches(settings, int(time.time() * 1_000_000), body)
    result = await _drive_sink(sink, batches, settings.duration_s)
    progress(f"  sink, {materializer.name}: {result.rows_per_s:,.0f} rows/s")
    return result


async def _sink_events(
    session: CassandraSession, settings: MaterializeSettings, progress: Progress
) -> Throughput:
    bodies = _bodies(settings.message_bytes)
    materializer = EventsMaterializer(EventsOptions(table="sink_events"))
    return await _sink_phase(
        session, settings, materializer, lambda _p, o: bodies[o % SINK_BATCH], progress
    )


async def _sink_latest(
    session: CassandraSession, settings: MaterializeSettings, progress: Progress
) -> Throughput:
    materializer = LatestMaterializer(LatestOptions(table="sink_latest", key_field="host"))
    size = settings.message_bytes

    def body(p: int, o: int) -> bytes:
        return _json_body(f'"host":"p{p}-host-{o % LATEST_KEYS}","seq":{o}', size)

    return await _sink_phase(session, settings, materializer, body, progress)


# A user's table for the mapping materializer: one row per reading, keyed by its id.
MAPPING_TABLE = (
    "CREATE TABLE IF NOT EXISTS {keyspace}.readings ("
    "id text PRIMARY KEY, device text, value double, status text, seen timestamp)"
)


async def _sink_mapping(
    session: CassandraSession, settings: MaterializeSettings, progress: Progress
) -> Throughput:
    await session.execute(MAPPING_TABLE.format(keyspace=session.config.keyspace))
    options = MappingOptions(
        table="readings",
        columns={
            "id": "id",
            "device": "device.name",
            "value": "value",
            "status": "status",
            "seen": "@event_time",
        },
    )
    size = settings.message_bytes

    def body(p: int, o: int) -> bytes:
        fields = f'"id":"p{p}-{o}","device":{{"name":"d-{o % 97}"}},"value":{o * 0.5},"status":"ok"'
        return _json_body(fields, size)

    return await _sink_phase(session, settings, MappingMaterializer(options), body, progress)


# -- 3. the whole consumer --------------------------------------------------------------------


async def _fill_journal(directory: Path, settings: MaterializeSettings) -> int:
    bodies = _bodies(settings.message_bytes)
    per_partition = max(SINK_BATCH, settings.rows // settings.partitions)
    async with open_journal(directory, JournalConfig()) as journal:
        for p in range(settings.partitions):
            for start in range(0, per_partition, SINK_BATCH):
                count = min(SINK_BATCH, per_partition - start)
                await journal.append(b"consumer%d" % p, 0, bodies[:count])
    return per_partition * settings.partitions


async def _whole_consumer(
    session: CassandraSession, settings: MaterializeSettings, work: Path, progress: Progress
) -> ConsumerResult:
    journal_dir = work / "journal"
    total = await _fill_journal(journal_dir, settings)
    progress(f"  journal filled: {total:,} messages on {settings.partitions} partitions")
    group = GroupConfig(name="bench", categories=("consumer*",), sink="cassandra")
    coordinator = LocalCoordinator(LocalCoordinatorConfig(state_dir=work / "consumers"), "bench")
    sink = CassandraSink(
        session,
        EventsMaterializer(EventsOptions(table="consumer_events")),
        group="bench",
        journal_id=read_journal_id(journal_dir),
        config=session.config,
    )
    await sink.start()  # as `pipeline consume` does before it joins its group
    runtime = ConsumerRuntime(journal_dir, group, coordinator, sink)
    written_s = committed_s = 0.0
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        await nursery.start(runtime.serve)
        while True:
            await trio.sleep(0.02)
            if not written_s and sink.metrics()["rows written"] >= total:
                written_s = time.perf_counter() - start
            offsets = await coordinator.all_committed()
            if sum(o or 0 for o in offsets.values()) >= total:
                committed_s = time.perf_counter() - start
                break
            if time.perf_counter() - start > max(600.0, 100 * settings.duration_s):
                raise BenchError(f"the consumer did not finish: {runtime.metrics()}")
        runtime.stop()
    result = ConsumerResult(total, written_s or committed_s, committed_s)
    progress(
        f"  whole consumer: {total / committed_s:,.0f} rows/s to all committed "
        f"({committed_s:.2f} s; all written after {result.seconds_written:.2f} s)"
    )
    return result


# -- 4. end to end ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_text(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def _server_config(settings: MaterializeSettings, work: Path, port: int, keyspace: str) -> str:
    hosts = ", ".join(_toml_text(h) for h in settings.hosts)
    return f"""# pipeline bench materialize: the end-to-end phase's `pipeline run`.
[server]
port = {port}
[journal]
dir = {_toml_text(str(work / "e2e-journal"))}
[coordination]
kind = "local"
state_dir = {_toml_text(str(work / "e2e-consumers"))}
[cassandra]
hosts = [{hosts}]
port = {settings.port}
keyspace = "{keyspace}"
max_in_flight = {settings.in_flight}
[services.zookeeper]
enabled = false
[services.cassandra]
enabled = false
[log]
level = "warning"
[[consumers]]
name = "events"
categories = ["e2e*"]
sink = "cassandra"
[consumers.cassandra]
materializer = "events"
table = "e2e_events"
"""


async def _until(
    check: Callable[[], Any], what: str, timeout_s: float, why: Callable[[], str]
) -> None:
    """Await ``check()`` every 50 ms until it is true; BenchError after ``timeout_s``."""
    deadline = time.perf_counter() + timeout_s
    while not await check():
        if time.perf_counter() > deadline:
            raise BenchError(f"{what} within {timeout_s:.0f} s; {why()}")
        await trio.sleep(0.05)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no log at {path}"
    return f"{path} ends:\n" + "\n".join(tail)


async def _end_to_end(
    session: CassandraSession, settings: MaterializeSettings, work: Path, progress: Progress
) -> EndToEndResult:
    keyspace = session.config.keyspace
    port = _free_port()
    config_file = work / "e2e.toml"
    config_file.write_text(_server_config(settings, work, port, keyspace))
    log_file = work / "e2e-server.log"
    with log_file.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "pipeline", "run", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        return await _drive_server(session, settings, work, port, process, log_file, progress)
    finally:
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(30):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _drive_server(
    session: CassandraSession,
    settings: MaterializeSettings,
    work: Path,
    port: int,
    process: trio.Process,
    log_file: Path,
    progress: Progress,
) -> EndToEndResult:
    keyspace = session.config.keyspace

    def why() -> str:
        state = "running" if process.returncode is None else f"exited {process.returncode}"
        return f"`pipeline run` {state}; {_log_tail(log_file)}"

    async def listening() -> bool:
        if process.returncode is not None:
            raise BenchError(f"the server stopped; {why()}")
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return False
        await stream.aclose()
        return True

    await _until(listening, "the server did not listen", E2E_START_TIMEOUT_S, why)
    prepared: list[Prepared] = []

    async def table_ready() -> bool:
        # The group creates its table at start; until that is done, preparing fails.
        try:
            prepared.append(
                await session.prepare(
                    f"SELECT offset FROM {keyspace}.e2e_events WHERE category = ? AND bucket = ?"
                    " AND (event_time, journal_id, partition, offset) >= (?, ?, ?, ?) LIMIT 1"
                )
            )
        except StorageError:
            return False
        return True

    await _until(table_ready, "the events group made no table", E2E_START_TIMEOUT_S, why)
    journal_id = read_journal_id(work / "e2e-journal")
    lookup = prepared[0]
    return await _e2e_load(session, settings, port, lookup, journal_id, why, progress)


@dataclass
class _Mark:
    offset: int
    sent_ms: int  # wall clock: the event time of the mark's row is not earlier
    ok_at: float  # perf_counter when Log answered OK


async def _e2e_load(
    session: CassandraSession,
    settings: MaterializeSettings,
    port: int,
    lookup: Prepared,
    journal_id: uuid.UUID,
    why: Callable[[], str],
    progress: Progress,
) -> EndToEndResult:
    """Paced Log calls on E2E_CONNECTIONS connections, one category each (one partition, so
    offsets are counted here); the first message of every MARK_EVERY-th call is looked up."""
    result = EndToEndResult(settings.rate)
    clock = time.perf_counter
    interval = E2E_CONNECTIONS * E2E_BATCH / settings.rate
    categories = [b"e2e%d" % c for c in range(E2E_CONNECTIONS)]
    marks: dict[bytes, deque[_Mark]] = {c: deque() for c in categories}
    bodies = _bodies(settings.message_bytes, E2E_BATCH)

    async def visible(category: bytes, mark: _Mark) -> bool:
        bucket = mark.sent_ms - mark.sent_ms % 3_600_000
        params = (category, bucket, mark.sent_ms, journal_id, 0, mark.offset)
        row = (await session.execute(lookup, params)).one()
        return row is not None and row[0] == mark.offset

    all_seen = trio.Event()  # set once the load is over and every mark was seen
    load_done = False

    async def poll(record: bool) -> None:
        while True:
            await trio.sleep(POLL_S)
            for category, pending in marks.items():
                while pending and await visible(category, pending[0]):
                    mark = pending.popleft()
                    if record:
                        result.latencies_ms.append((clock() - mark.ok_at) * 1000)
            if load_done and not any(marks.values()):
                all_seen.set()

    requests = {
        c: prepare_log([LogEntry(c, b) for b in bodies], framed=True, strict=False)
        for c in categories
    }

    async def send(
        client: AsyncScribeClient, category: bytes, state: list[int], mark: bool
    ) -> bool:
        prepared = requests[category]
        sent_ms = int(time.time() * 1000)
        code = await client.log_prepared(prepared)
        if code != ResultCode.OK:
            return False
        ms = int(time.time() * 1000)
        # A mark whose call spans the turn of an hour may land in either bucket: not marked.
        if mark and sent_ms // 3_600_000 == ms // 3_600_000:
            marks[category].append(_Mark(state[0], sent_ms, clock()))
        state[0] += E2E_BATCH
        return True

    clients = [await AsyncScribeClient.connect("127.0.0.1", port) for _ in categories]
    offsets = [[0] for _ in categories]
    try:
        # Warm up: one call per category, until the group has found each partition.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll, False)
            for client, category, state in zip(clients, categories, offsets, strict=True):
                if not await send(client, category, state, True):
                    raise BenchError("the server answered TRY_LATER to the first call")

            async def drained() -> bool:
                return not any(marks.values())

            await _until(
                drained, "the first events were not materialized", E2E_START_TIMEOUT_S, why
            )
            nursery.cancel_scope.cancel()
        progress(f"  end to end: offering {settings.rate:,.0f} events/s")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll, True)
            start = clock()
            stop_at = start + settings.duration_s

            async def connection(index: int) -> None:
                client, category, state = clients[index], categories[index], offsets[index]
                next_send = start + interval * index / E2E_CONNECTIONS
                calls = 0
                while (now := clock()) < stop_at:
                    if next_send > now:
                        await trio.sleep(next_send - now)
                    next_send += interval
                    if await send(client, category, state, calls % MARK_EVERY == 0):
                        result.messages += E2E_BATCH
                    else:
                        result.try_later += 1
                    calls += 1

            async with trio.open_nursery() as senders:
                for index in range(E2E_CONNECTIONS):
                    senders.start_soon(connection, index)
            result.seconds = clock() - start
            load_done = True
            with trio.move_on_after(E2E_DRAIN_TIMEOUT_S):
                await all_seen.wait()
            result.missing = sum(len(m) for m in marks.values())
            nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    summary = result.summary()
    progress(
        f"  end to end: {summary['offered_per_s']:,} events/s offered, p50 {summary['p50_ms']} ms"
        f", p99 {summary['p99_ms']} ms over {summary['marks']} marks"
    )
    return result


# -- the run ----------------------------------------------------------------------------------


async def run_materialize(settings: MaterializeSettings, progress: Progress) -> MaterializeReport:
    """Every phase, in a fresh keyspace that is dropped afterwards (also on failure)."""
    keyspace = f"{settings.keyspace_prefix}_{uuid.uuid4().hex[:8]}"
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    report = MaterializeReport(settings, keyspace)
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="bench-materialize-") as tmp:
        work = Path(tmp)
        try:
            async with open_cassandra(_cassandra_config(settings, keyspace)) as session:
                try:
                    await _phases(session, settings, work, report, progress)
                finally:
                    with trio.CancelScope(shield=True):
                        progress(f"dropping keyspace {keyspace}")
                        await session.drop_keyspace(keyspace)
        except StorageError as exc:
            raise BenchError(f"Cassandra: {exc}") from exc
    return report


async def _phases(
    session: CassandraSession,
    settings: MaterializeSettings,
    work: Path,
    report: MaterializeReport,
    progress: Progress,
) -> None:
    # Each sink phase runs right after the bare loop it is compared with: Cassandra's
    # background work (flushes, compactions) then weighs on both alike.
    progress(f"keyspace {report.keyspace}: bare driver, batches")
    report.bare.update(
        await trio.to_thread.run_sync(
            _bare_driver, settings, report.keyspace, bare_phases(settings, batches=True), progress
        )
    )
    progress("sink, events")
    report.sink["events"] = await _sink_events(session, settings, progress)
    progress("bare driver, single rows")
    report.bare.update(
        await trio.to_thread.run_sync(
            _bare_driver, settings, report.keyspace, bare_phases(settings, batches=False), progress
        )
    )
    progress("sink, latest and mapping")
    report.sink["latest"] = await _sink_latest(session, settings, progress)
    report.sink["mapping"] = await _sink_mapping(session, settings, progress)
    progress("whole consumer")
    report.consumer = await _whole_consumer(session, settings, work, progress)
    progress("end to end")
    report.e2e = await _end_to_end(session, settings, work, progress)
