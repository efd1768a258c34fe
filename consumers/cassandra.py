"""Cassandra through cassandra-driver: the only module that imports cassandra-driver.

`open_cassandra(config)` connects (protocol v5, token-aware routing within the local datacenter,
optional password authentication) and yields a `CassandraSession` whose methods are trio
coroutines returning typed frozen dataclasses; the driver's exceptions come out as
`consumers.errors`.

Writes (`CassandraSession.bind`, `CassandraSession.write`): statements are prepared once, bound
on the trio thread (binding serializes the values, so a value of the wrong type fails there, as
`CassandraBindError` naming the column), marked idempotent (every write the pipeline makes is:
keys and write times derive from the event), and sent as UNLOGGED batches of rows that share one
partition key.  At most ``max_in_flight`` requests are outstanding per process; the driver's
callbacks only hand each outcome to trio.

Threads: connecting and shutting down block, and enter trio through one adapter,
`trio.to_thread.run_sync` with a `CapacityLimiter`.  Requests use the driver's own asynchronous
path: its callbacks run on the driver's event-loop thread and only hand the result to trio with
`TrioToken.run_sync_soon`.  A request is never abandoned on cancellation (a write's outcome would
be unknown); the driver's request timeout bounds the wait.
"""

from __future__ import annotations

import enum
import operator
import re
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

import trio
from annotated_types import Ge, Interval
from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    DriverException,
    OperationTimedOut,
    RequestExecutionException,
    RequestValidationException,
    Timeout,
    Unavailable,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import (
    UNSET_VALUE,
    BatchStatement,
    BatchType,
    BoundStatement,
    tuple_factory,
)

from consumers.cassandra_values import RowSerializer, UnfitValueError
from consumers.errors import (
    CassandraAuthFailed,
    CassandraBindError,
    CassandraInvalidRequest,
    CassandraQueryError,
    CassandraTimeout,
    CassandraUnavailable,
    InvalidConnectionConfig,
    StorageError,
)

__all__ = [
    "UNSET",
    "Bound",
    "CassandraConfig",
    "CassandraSession",
    "Consistency",
    "Prepared",
    "Replication",
    "ReplicationStrategy",
    "Rows",
    "open_cassandra",
    "probe_cassandra",
]

# Threads connecting or shutting down at once; requests do not use threads.
DEFAULT_THREADS = 4

# How Cassandra words a request against a table or keyspace that is not there (5.0, then 4.x).
_SCHEMA_MISSING = re.compile(
    r"(table|keyspace) \S+ does not exist|unconfigured table",
    re.IGNORECASE,
)

# Bind this for a column to write nothing to it (no cell, no tombstone; protocol v4 and later).
UNSET: Any = UNSET_VALUE

# Unquoted CQL identifiers: letters, digits, underscore; Cassandra caps names at 48 characters.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


class ReplicationStrategy(enum.Enum):
    SIMPLE = "SimpleStrategy"
    NETWORK_TOPOLOGY = "NetworkTopologyStrategy"


@dataclass(frozen=True)
class Replication:
    """A keyspace's replication: ``factor`` for SimpleStrategy, ``datacenters`` (name to
    replica count) for NetworkTopologyStrategy."""

    strategy: ReplicationStrategy = ReplicationStrategy.SIMPLE
    factor: Annotated[int, Ge(1)] = 1
    datacenters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy is ReplicationStrategy.NETWORK_TOPOLOGY:
            if not self.datacenters:
                raise InvalidConnectionConfig(
                    "replication.datacenters", "NetworkTopologyStrategy needs datacenters"
                )
            for dc, count in self.datacenters.items():
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    raise InvalidConnectionConfig(
                        f"replication.datacenters.{dc}", f"expected a count >= 1, got {count!r}"
                    )

    def cql(self) -> str:
        """The CQL map literal for ``WITH replication = ...``."""
        entries = {"class": self.strategy.value}
        if self.strategy is ReplicationStrategy.SIMPLE:
            entries["replication_factor"] = str(self.factor)
        else:
            entries.update({dc: str(n) for dc, n in sorted(self.datacenters.items())})
        inner = ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in entries.items())
        return "{" + inner + "}"


class Consistency(enum.Enum):
    """Consistency levels a write may ask for."""

    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    LOCAL_QUORUM = "LOCAL_QUORUM"
    EACH_QUORUM = "EACH_QUORUM"
    LOCAL_ONE = "LOCAL_ONE"

    @property
    def level(self) -> int:
        return int(getattr(ConsistencyLevel, self.value))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class CassandraConfig:
    """The ``[cassandra]`` table: how to reach the cluster, the keyspace (created when missing),
    and how writes are sent.  One per process, shared by every consumer group."""

    # Contact points: any nodes of the cluster; the driver discovers the others.
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: Annotated[int, Interval(ge=1, le=65535)] = 9042
    # Token-aware routing prefers replicas in this datacenter (SimpleSnitch calls it datacenter1).
    local_dc: str = "datacenter1"
    username: str | None = None
    password: str | None = None
    # The native protocol versions Cassandra 4 and 5 both speak.
    protocol_version: Annotated[int, Interval(ge=4, le=5)] = 5
    keyspace: str = "scribe_pipeline"
    replication: Replication = field(default_factory=Replication)
    # LOCAL_QUORUM survives one replica down at replication factor 3 and reads back what was
    # written at the same level; LOCAL_ONE is faster and weaker.
    consistency: Consistency = Consistency.LOCAL_QUORUM
    # At most an hour: socket timeouts have a platform limit, and a request that long failed.
    connect_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 5.0
    request_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    # Requests outstanding at once in this process: the driver's own measurements reach their
    # ceiling between 128 and 512; more only queues inside the driver (whose connections take
    # 32768 streams each).
    max_in_flight: Annotated[int, Interval(ge=1, le=32768)] = 256
    # UNLOGGED batches only ever hold rows of one partition key, and stay well under Cassandra's
    # batch_size_fail_threshold (50 KiB by default; counted on the server's encoding, which is
    # larger than the bound values this limit adds up).
    max_batch_rows: Annotated[int, Ge(1)] = 100
    max_batch_bytes: Annotated[int, Ge(1)] = 32 * 1024
    # Create and migrate the pipeline's own tables at start (CREATE ... IF NOT EXISTS,
    # versioned).  Off: the tables must exist already (`pipeline schema apply`).
    create_schema: bool = True

    def __post_init__(self) -> None:
        if not self.hosts or any(not p for p in self.hosts):
            raise InvalidConnectionConfig("hosts", "expected at least one host")
        if (self.username is None) != (self.password is None):
            raise InvalidConnectionConfig("username", "set both username and password, or neither")
        if not _NAME.fullmatch(self.keyspace):
            raise InvalidConnectionConfig(
                "keyspace", f"expected a name of letters, digits and _, got {self.keyspace!r}"
            )

    @property
    def address(self) -> str:
        return ", ".join(f"{host}:{self.port}" for host in self.hosts)


@dataclass(frozen=True)
class Rows:
    """A query's result: column names and every row (all pages) as tuples."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def one(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Prepared:
    """A prepared statement; pass it to `CassandraSession.execute` or `CassandraSession.bind`."""

    query: str
    statement: Any = field(repr=False, compare=False)
    # Picks a bound row's serialized partition-key values out of all of its values.
    _key_of: Callable[[Sequence[Any]], Any] = field(init=False, repr=False, compare=False)
    _serialize: RowSerializer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        indexes = getattr(self.statement, "routing_key_indexes", None)
        key_of = operator.itemgetter(*indexes) if indexes else _no_key
        object.__setattr__(self, "_key_of", key_of)
        types = [column.type for column in self.statement.column_metadata]
        serialize = RowSerializer(types, self.statement.protocol_version, UNSET_VALUE)
        object.__setattr__(self, "_serialize", serialize)

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of its bind markers, in order."""
        return tuple(c.name for c in self.statement.column_metadata)


def _no_key(_values: Sequence[Any]) -> bytes:
    return b""


class Bound:
    """A prepared statement's serialized values, ready for `CassandraSession.write`.

    ``partition_key`` stands for the partition key: the serialized values of its columns
    (bytes, or a tuple of bytes for a composite key; rows with equal ones may share a batch);
    ``routing_key`` is the serialized partition key itself; ``size`` the bytes of the values.
    """

    __slots__ = ("partition_key", "prepared", "size", "values")

    def __init__(self, prepared: Prepared, values: list[Any]) -> None:
        self.prepared = prepared
        self.values = values
        # Cheaper than the driver's routing key, which packs a composite key into new bytes:
        # a batch computes that once, from its first row.
        self.partition_key = prepared._key_of(values)
        # Values are bytes, None or the driver's UNSET (counted as 0).
        self.size = sum(map(operator.length_hint, values))

    def statement(self) -> Any:
        """The driver's statement for this row alone."""
        statement = BoundStatement(self.prepared.statement)
        statement.values = self.values
        statement.is_idempotent = True
        return statement

    @property
    def routing_key(self) -> bytes:
        key = self.partition_key
        if isinstance(key, bytes):
            return key
        # The driver's composite form: each component as a 2-byte length, the bytes, a zero.
        return b"".join(struct.pack(">H", len(part)) + part + b"\x00" for part in key)


def _cluster(config: CassandraConfig) -> Any:
    auth = None
    if config.username is not None:
        auth = PlainTextAuthProvider(username=config.username, password=config.password)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        request_timeout=config.request_timeout_s,
        row_factory=tuple_factory,
        consistency_level=config.consistency.level,
    )
    return Cluster(
        contact_points=list(config.hosts),
        port=config.port,
        protocol_version=config.protocol_version,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=config.connect_timeout_s,
        control_connection_timeout=config.connect_timeout_s,
        # A single local node is no reason to wait for schema agreement long.
        max_schema_agreement_wait=config.request_timeout_s,
        # The driver's default waits up to 10 minutes between attempts to reach a node that
        # was down; a paused partition should resume within seconds of the node's return.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
    )


def _translate_connect(exc: BaseException, config: CassandraConfig) -> StorageError:
    if isinstance(exc, NoHostAvailable):
        errors = list(getattr(exc, "errors", {}).values())
        if any(isinstance(e, AuthenticationFailed) for e in errors):
            return CassandraAuthFailed(
                f"Cassandra at {config.address} refused the credentials",
                contact_points=config.hosts,
            )
        reason = "; ".join(str(e) for e in errors) or str(exc)
        return CassandraUnavailable(config.hosts, config.port, config.connect_timeout_s, reason)
    if isinstance(exc, AuthenticationFailed):
        return CassandraAuthFailed(str(exc), contact_points=config.hosts)
    return CassandraUnavailable(config.hosts, config.port, config.connect_timeout_s, repr(exc))


def _translate_request(exc: BaseException, query: str) -> StorageError:
    if isinstance(exc, OperationTimedOut | Timeout):
        return CassandraTimeout(query, str(exc))
    if isinstance(exc, NoHostAvailable):
        return CassandraQueryError(query, f"no host available: {exc}")
    if isinstance(exc, RequestValidationException):
        if _SCHEMA_MISSING.search(str(exc)):
            # A dropped table or keyspace: the data is fine, the schema will come back.
            return CassandraQueryError(query, str(exc))
        # Invalid request, syntax, unauthorized, already exists: sending it again cannot help.
        return CassandraInvalidRequest(query, str(exc))
    if isinstance(exc, Unavailable | RequestExecutionException):
        return CassandraQueryError(query, str(exc))
    if isinstance(exc, DriverException):
        return CassandraQueryError(query, repr(exc))
    return CassandraQueryError(query, repr(exc))


def _request_for(group: Sequence[Bound]) -> Any:
    first = group[0]
    if len(group) == 1:
        return first.statement()
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    # Rows go in as the driver's own `BatchStatement.add` would put a bound statement's values,
    # without a `BoundStatement` per row (half of a bulk writer's CPU went to building them).
    batch._statements_and_parameters = [
        (True, bound.prepared.statement.query_id, bound.values) for bound in group
    ]
    batch.keyspace = first.prepared.statement.keyspace
    batch.routing_key = first.routing_key
    batch.is_idempotent = True
    return batch


def _describe(group: Sequence[Bound]) -> str:
    query = group[0].prepared.query
    return query if len(group) == 1 else f"BATCH of {len(group)}: {query}"


def _connect(config: CassandraConfig) -> tuple[Any, Any]:
    """Blocking: a cluster and a session, or a translated error (the cluster shut down)."""
    cluster = _cluster(config)
    try:
        session = cluster.connect()
    except Exception as exc:
        cluster.shutdown()
        raise _translate_connect(exc, config) from exc
    return cluster, session


def probe_cassandra(config: CassandraConfig) -> str:
    """Blocking: connect, ask the node's release version, disconnect.

    For readiness checks outside trio (``pipeline services start``).
    """
    cluster, session = _connect(config)
    try:
        row = session.execute(
            "SELECT release_version FROM system.local", timeout=config.request_timeout_s
        ).one()
        return str(row[0])
    except Exception as exc:
        raise _translate_request(exc, "SELECT release_version FROM system.local") from exc
    finally:
        cluster.shutdown()


class CassandraSession:
    """A connected session; use `open_cassandra` to get one."""

    def __init__(
        self, config: CassandraConfig, cluster: Any, session: Any, limiter: trio.CapacityLimiter
    ) -> None:
        self.config = config
        self._cluster = cluster
        self._session = session
        self._limiter = limiter
        self._token = trio.lowlevel.current_trio_token()
        self._in_flight = trio.Semaphore(config.max_in_flight)

    @property
    def hosts_up(self) -> int:
        """The cluster's hosts the driver reaches now: it marks a host down as soon as its
        connections fail, also while the session is idle, and up again once it reconnects."""
        return sum(1 for host in self._cluster.metadata.all_hosts() if host.is_up)

    async def _request(self, query: str, start: Any) -> Any:
        """Start a driver request with ``start()`` and wait for its result in trio.

        ``start`` returns a driver future (`ResponseFuture`); pages after the first are fetched
        from the driver's callback thread, and the rows handed over once complete.
        """
        done = trio.Event()
        outcome: list[Any] = []
        rows: list[tuple[Any, ...]] = []
        token = self._token

        def finish(result: Any) -> None:  # trio thread
            outcome.append(result)
            done.set()

        def hand_over(result: Any) -> None:  # driver thread: never blocks
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(finish, result)

        try:
            future = start()
        except Exception as exc:
            raise _translate_request(exc, query) from exc

        def on_page(page: Any) -> None:  # driver thread
            if isinstance(page, list):
                rows.extend(tuple(r) for r in page)
            if future.has_more_pages:
                future.start_fetching_next_page()
            else:
                hand_over(Rows(tuple(getattr(future, "_col_names", None) or ()), tuple(rows)))

        future.add_callbacks(on_page, hand_over)
        # Never abandon a request: a write's outcome would be unknown.  The driver's request
        # timeout ends the wait.
        with trio.CancelScope(shield=True):
            await done.wait()
        result = outcome[0]
        if isinstance(result, BaseException):
            raise _translate_request(result, query) from result
        return result

    async def execute(
        self, query: str | Prepared, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> Rows:
        """Run one statement (text or `Prepared`) with bound ``params``."""
        text = query.query if isinstance(query, Prepared) else query
        statement = query.statement if isinstance(query, Prepared) else query
        result: Rows = await self._request(
            text, lambda: self._session.execute_async(statement, params)
        )
        return result

    def bind(self, prepared: Prepared, values: Sequence[Any] | Mapping[str, Any]) -> Bound:
        """Bind ``values`` (by position, or by name with absent names left `UNSET`).

        Raises `CassandraBindError` naming the column when a value does not fit its type.
        """
        if isinstance(values, Mapping):
            values = [values.get(name, UNSET_VALUE) for name in prepared.columns]
        try:
            return Bound(prepared, prepared._serialize(values))
        except UnfitValueError as exc:
            column = prepared.columns[exc.index]
            raise CassandraBindError(prepared.query, column, str(exc)) from exc
        except ValueError as exc:  # not as many values as bind markers
            raise CassandraBindError(prepared.query, "?", str(exc)) from exc

    async def write(self, groups: Sequence[Sequence[Bound]]) -> list[StorageError | None]:
        """Send each group as one request (an UNLOGGED batch when it holds more than one row;
        every row of a group must share its partition key) and wait for all of them.

        Returns one outcome per group: None when Cassandra acknowledged it, else the translated
        error.  At most ``max_in_flight`` requests of this session are outstanding at once.
        """
        outcomes: list[StorageError | None] = [None] * len(groups)
        if not groups:
            return outcomes
        pending = len(groups)
        all_done = trio.Event()
        token = self._token
        in_flight = self._in_flight
        futures: list[Any] = [None] * len(groups)

        def finish(index: int, error: BaseException | None) -> None:  # trio thread
            nonlocal pending
            in_flight.release()
            future, futures[index] = futures[index], None
            if future is not None:
                # A finished driver future still holds its cancelled timeout timer, whose
                # callback holds the future: a reference cycle that keeps the request and
                # every bound row in memory until a full garbage collection.  Cut it, so it
                # all goes at once (the driver's own paging does the same).
                future._timer = None
            if error is not None:
                outcomes[index] = _translate_request(error, _describe(groups[index]))
            pending -= 1
            if not pending:
                all_done.set()

        # Outcomes reach trio in bulk: one wakeup of the trio thread for all the requests
        # that finished meanwhile, not one each (a thousand single-row requests per batch).
        finished: deque[tuple[int, BaseException | None]] = deque()
        drain_pending = False

        def drain() -> None:  # trio thread
            nonlocal drain_pending
            drain_pending = False  # before taking any: a later outcome schedules a new drain
            while finished:
                finish(*finished.popleft())

        def hand_over(index: int, error: BaseException | None) -> None:  # driver thread
            nonlocal drain_pending
            finished.append((index, error))  # before looking at drain_pending: never stranded
            if not drain_pending:
                drain_pending = True
                with suppress(trio.RunFinishedError):
                    token.run_sync_soon(drain)

        # Every request is started and waited for: a write's outcome must never be unknown.
        with trio.CancelScope(shield=True):
            for index, group in enumerate(groups):
                try:
                    # Without a wait, no schedule point: a thousand single-row requests are
                    # started in one go instead of a trip through trio's scheduler each.
                    in_flight.acquire_nowait()
                except trio.WouldBlock:
                    await in_flight.acquire()
                try:
                    future = self._session.execute_async(_request_for(group))
                except Exception as exc:
                    finish(index, exc)
                    continue
                futures[index] = future
                future.add_callbacks(
                    lambda _rows, i=index: hand_over(i, None),
                    lambda exc, i=index: hand_over(i, exc),
                )
            await all_done.wait()
        return outcomes

    async def prepare(self, query: str) -> Prepared:
        """Prepare ``query`` on the cluster (blocking in the driver, so in a worker thread)."""
        try:
            statement = await trio.to_thread.run_sync(
                self._session.prepare, query, limiter=self._limiter
            )
        except Exception as exc:
            raise _translate_request(exc, query) from exc
        return Prepared(query, statement)

    async def create_keyspace(
        self, name: str | None = None, replication: Replication | None = None
    ) -> str:
        """``CREATE KEYSPACE IF NOT EXISTS`` with the configured replication; returns the name."""
        name = name or self.config.keyspace
        if not _NAME.fullmatch(name):
            raise CassandraQueryError(f"CREATE KEYSPACE {name}", "invalid keyspace name")
        replication = replication or self.config.replication
        await self.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {name} WITH replication = {replication.cql()}"
        )
        return name

    async def drop_keyspace(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise CassandraQueryError(f"DROP KEYSPACE {name}", "invalid keyspace name")
        await self.execute(f"DROP KEYSPACE IF EXISTS {name}")

    async def use_keyspace(self, name: str) -> None:
        """Make ``name`` the session's keyspace for unqualified table names."""
        if not _NAME.fullmatch(name):
            raise CassandraQueryError(f"USE {name}", "invalid keyspace name")
        try:
            await trio.to_thread.run_sync(self._session.set_keyspace, name, limiter=self._limiter)
        except Exception as exc:
            raise _translate_request(exc, f"USE {name}") from exc

    async def release_version(self) -> str:
        row = (await self.execute("SELECT release_version FROM system.local")).one()
        return "" if row is None else str(row[0])

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._cluster.shutdown, limiter=self._limiter)


@asynccontextmanager
async def open_cassandra(
    config: CassandraConfig,
    *,
    create_keyspace: bool = True,
    limiter: trio.CapacityLimiter | None = None,
) -> AsyncIterator[CassandraSession]:
    """Connect, create and use the configured keyspace (unless told not to), shut down on exit.

    Raises `CassandraUnavailable` naming host:port when no contact point answers within
    ``connect_timeout_s``, `CassandraAuthFailed` when the credentials are refused.
    """
    limiter = limiter or trio.CapacityLimiter(DEFAULT_THREADS)
    cluster, session = await trio.to_thread.run_sync(_connect, config, limiter=limiter)
    wrapped = CassandraSession(config, cluster, session, limiter)
    try:
        if create_keyspace:
            await wrapped.create_keyspace()
            await wrapped.use_keyspace(config.keyspace)
        yield wrapped
    finally:
        with trio.CancelScope(shield=True):
            await wrapped.aclose()
