"""ZooKeeper through kazoo: the only module that imports kazoo.

`open_zookeeper(config)` opens a session and yields a `ZooKeeperClient` whose methods are trio
coroutines returning typed frozen dataclasses; kazoo's exceptions come out as `consumers.errors`.
`ZooKeeperClient.transaction` applies typed steps (`TxnCheck`, `TxnSet`, `TxnCreate`, `TxnDelete`)
atomically and raises the failing step's error, naming its path.

Threads: kazoo runs its own connection thread.  Blocking calls enter trio in one place,
`ZooKeeperClient._call`, through `trio.to_thread.run_sync` with a `CapacityLimiter`; a call is never
abandoned on cancellation (its outcome would be unknown), and every call is bounded by
`request_timeout_s`, so a server that is down cannot hang a task forever.  kazoo's callbacks (the
connection-state listener and watches) run on kazoo's thread and must not block: they only hand
the event to trio with `TrioToken.run_sync_soon`, and trio delivers it with `send_nowait`.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import trio
from annotated_types import Interval
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KeeperState
from kazoo.security import (
    CREATOR_ALL_ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
)

from consumers.errors import (
    AuthFailed,
    BadVersion,
    ConnectionInterrupted,
    InvalidConnectionConfig,
    NodeExists,
    NoNode,
    NotAuthorized,
    NotEmpty,
    SessionLost,
    ZooKeeperError,
    ZooKeeperUnavailable,
)

__all__ = [
    "AclPolicy",
    "ConnectionEvent",
    "ConnectionState",
    "NodeStat",
    "TxnCheck",
    "TxnCreate",
    "TxnDelete",
    "TxnOp",
    "TxnSet",
    "Watch",
    "WatchEvent",
    "ZooKeeperClient",
    "ZooKeeperConfig",
    "open_zookeeper",
    "probe_zookeeper",
]

T = TypeVar("T")

_LOG = logging.getLogger("consumers.coordination.zk_client.kazoo")
_PROBE_LOG = logging.getLogger("consumers.coordination.zk_client.probe")
_PROBE_LOG.setLevel(logging.CRITICAL)

# Connection-state events waiting for a reader.  A reader that falls this far behind misses
# events, never blocks kazoo's thread; `ZooKeeperClient.state` always holds the latest one.
STATE_QUEUE_LIMIT = 64

# kazoo threads doing blocking calls for one client at once: enough for a member's concurrent
# offset commits and ownership checks, small enough not to flood a shared server.
DEFAULT_THREADS = 8


class AclPolicy(enum.Enum):
    """ACL given to the nodes this client creates."""

    OPEN = "open"  # world:anyone may do anything (ZooKeeper's default)
    CREATOR = "creator"  # only the digest identity that created the node
    CREATOR_WORLD_READ = "creator_world_read"  # the creator does anything, everyone may read


@dataclass(frozen=True)
class ZooKeeperConfig:
    """How to reach ZooKeeper.

    ``hosts`` is ZooKeeper's connection string (``host:port,host:port``); ``chroot`` (``/a/b`` or
    empty) roots every path of this client and is created when missing.  ``auth_digest`` is
    ``user:password`` for digest authentication.
    """

    hosts: str = "127.0.0.1:2181"
    chroot: str = ""
    # ZooKeeper grants between its minSessionTimeout and maxSessionTimeout; a suspended member
    # stops writing at once, so the timeout only bounds how long a dead member keeps ownership.
    # (ZooKeeper's own maximum is 20 ticks, 40 s by default; an hour is far past any.)
    session_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    connect_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 5.0
    # Upper bound for one call: with the server down, kazoo queues calls until it reconnects.
    request_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    auth_digest: str | None = None
    acl: AclPolicy = AclPolicy.OPEN

    def __post_init__(self) -> None:
        if not self.hosts or any(not h.strip() for h in self.hosts.split(",")):
            raise InvalidConnectionConfig(
                "hosts", f"expected host:port[,host:port], got {self.hosts!r}"
            )
        if "/" in self.hosts:
            raise InvalidConnectionConfig("hosts", "put the chroot in `chroot`, not in `hosts`")
        if self.chroot and (
            not self.chroot.startswith("/") or self.chroot.endswith("/") or "//" in self.chroot
        ):
            raise InvalidConnectionConfig(
                "chroot", f"expected an absolute path like /pipeline, got {self.chroot!r}"
            )
        if self.auth_digest is not None and ":" not in self.auth_digest:
            raise InvalidConnectionConfig("auth_digest", "expected user:password")
        if self.acl is not AclPolicy.OPEN and self.auth_digest is None:
            raise InvalidConnectionConfig(
                "acl", f"{self.acl.value!r} needs auth_digest (the creator's identity)"
            )

    @property
    def address(self) -> str:
        """The connection string with the chroot, for messages."""
        return self.hosts + self.chroot


class ConnectionState(enum.Enum):
    """kazoo's view of the session: connected, suspended (reconnecting), or lost (expired)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True)
class ConnectionEvent:
    state: ConnectionState
    at: float  # time.monotonic() when kazoo reported it


@dataclass(frozen=True)
class NodeStat:
    """A node's metadata (ZooKeeper's Stat)."""

    version: int
    child_version: int
    acl_version: int
    created_zxid: int
    modified_zxid: int
    created_ms: int
    modified_ms: int
    ephemeral_owner: int  # session id, 0 for persistent nodes
    data_length: int
    num_children: int

    @property
    def ephemeral(self) -> bool:
        return self.ephemeral_owner != 0


class WatchKind(enum.Enum):
    CREATED = "created"
    DELETED = "deleted"
    CHANGED = "changed"
    CHILDREN = "children"
    NONE = "none"  # a session event, not a node event


@dataclass(frozen=True)
class WatchEvent:
    kind: WatchKind
    path: str


class Watch:
    """A one-shot ZooKeeper watch; `await watch.wait()` returns the event that fired it."""

    def __init__(self) -> None:
        self._fired = trio.Event()
        self._event: WatchEvent | None = None

    @property
    def fired(self) -> bool:
        return self._fired.is_set()

    async def wait(self) -> WatchEvent:
        await self._fired.wait()
        assert self._event is not None
        return self._event

    def _fire(self, event: WatchEvent) -> None:  # runs in trio
        if not self._fired.is_set():
            self._event = event
            self._fired.set()


@dataclass(frozen=True)
class TxnCheck:
    """Transaction step: the node at ``path`` still has ``version``."""

    path: str
    version: int


@dataclass(frozen=True)
class TxnSet:
    """Transaction step: replace the node's data (only at ``version`` when it is >= 0)."""

    path: str
    value: bytes
    version: int = -1


@dataclass(frozen=True)
class TxnCreate:
    """Transaction step: create a node (its parent must exist)."""

    path: str
    value: bytes = b""
    ephemeral: bool = False


@dataclass(frozen=True)
class TxnDelete:
    """Transaction step: delete a childless node (only at ``version`` when it is >= 0)."""

    path: str
    version: int = -1


TxnOp = TxnCheck | TxnSet | TxnCreate | TxnDelete


def _acl_for(policy: AclPolicy) -> list[Any]:
    if policy is AclPolicy.OPEN:
        return list(OPEN_ACL_UNSAFE)
    if policy is AclPolicy.CREATOR:
        return list(CREATOR_ALL_ACL)
    return list(CREATOR_ALL_ACL) + list(READ_ACL_UNSAFE)


def _stat(raw: Any) -> NodeStat:
    return NodeStat(
        version=raw.version,
        child_version=raw.cversion,
        acl_version=raw.aversion,
        created_zxid=raw.czxid,
        modified_zxid=raw.mzxid,
        created_ms=raw.ctime,
        modified_ms=raw.mtime,
        ephemeral_owner=raw.ephemeralOwner,
        data_length=raw.dataLength,
        num_children=raw.numChildren,
    )


def _new_kazoo(
    config: ZooKeeperConfig,
    *,
    with_chroot: bool,
    client_id: Any = None,
    logger: logging.Logger | None = None,
) -> Any:
    auth = [("digest", config.auth_digest)] if config.auth_digest is not None else None
    return KazooClient(
        hosts=config.hosts + (config.chroot if with_chroot else ""),
        timeout=config.session_timeout_s,
        client_id=client_id,
        auth_data=auth,
        default_acl=_acl_for(config.acl),
        # Reconnect for ever in the background; our calls carry their own timeout.
        connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 2.0},
        logger=logger or _LOG,
    )


def _start_or_raise(client: Any, config: ZooKeeperConfig) -> None:
    """Start ``client`` (blocking) or raise `ZooKeeperUnavailable` within ``connect_timeout_s``.

    kazoo's own ``start`` stops a failed client synchronously, which waits out a handshake read
    of up to the whole session timeout; the failed client is stopped on a daemon thread instead.
    """
    try:
        live = client.start_async()
        live.wait(config.connect_timeout_s)
    except KazooException as exc:
        _stop_in_background(client)
        raise ZooKeeperUnavailable(config.hosts, config.connect_timeout_s, repr(exc)) from exc
    if client.connected:
        return
    state = str(client.client_state)
    _stop_in_background(client)
    if state == KeeperState.AUTH_FAILED:
        raise AuthFailed("ZooKeeper refused the credentials", hosts=config.hosts)
    raise ZooKeeperUnavailable(config.hosts, config.connect_timeout_s, "no session")


def _stop_in_background(client: Any) -> None:
    threading.Thread(target=_close_quietly, args=(client,), name="kazoo-stop", daemon=True).start()


def _close_quietly(client: Any) -> None:
    try:
        client.stop()
        client.close()
    except KazooException:  # pragma: no cover - best effort at teardown
        pass


def _ensure_chroot(config: ZooKeeperConfig) -> None:
    """Create the chroot node (blocking): kazoo cannot create it through a chrooted client."""
    if not config.chroot:
        return
    client = _new_kazoo(config, with_chroot=False)
    _start_or_raise(client, config)
    try:
        client.ensure_path_async(config.chroot).get(timeout=config.request_timeout_s)
    except KazooException as exc:
        raise _translate(exc, config.chroot, config.hosts, None) from exc
    except KazooTimeoutError as exc:
        raise ConnectionInterrupted(
            f"ZooKeeper did not create the chroot within {config.request_timeout_s:g} s",
            hosts=config.hosts,
        ) from exc
    finally:
        _close_quietly(client)


def probe_zookeeper(config: ZooKeeperConfig) -> None:
    """Blocking: open a session and close it, or raise `ZooKeeperUnavailable`.

    For readiness checks outside trio (``pipeline services start``).
    """
    # Refused connections are the expected answer while a server starts: keep them quiet.
    client = _new_kazoo(config, with_chroot=False, logger=_PROBE_LOG)
    _start_or_raise(client, config)
    _close_quietly(client)


def _translate(exc: BaseException, path: str, hosts: str, state: Any) -> ZooKeeperError:
    if isinstance(exc, NoNodeError):
        return NoNode("no such node", path=path, hosts=hosts)
    if isinstance(exc, NodeExistsError):
        return NodeExists("node exists", path=path, hosts=hosts)
    if isinstance(exc, BadVersionError):
        return BadVersion("version mismatch", path=path, hosts=hosts)
    if isinstance(exc, NotEmptyError):
        return NotEmpty("node has children", path=path, hosts=hosts)
    if isinstance(exc, NoAuthError):
        return NotAuthorized("not authorized", path=path, hosts=hosts)
    if isinstance(exc, AuthFailedError):
        return AuthFailed("ZooKeeper refused the credentials", hosts=hosts)
    if isinstance(exc, SessionExpiredError):
        # kazoo also raises this for calls made while it is reconnecting: the session may well
        # be alive, and only LOST says it is gone.
        if state == KazooState.LOST:
            return SessionLost(f"ZooKeeper session expired ({hosts})", hosts=hosts)
        return ConnectionInterrupted(f"ZooKeeper connection interrupted ({hosts})", hosts=hosts)
    if isinstance(exc, ConnectionClosedError):
        return SessionLost(f"ZooKeeper client closed ({hosts})", hosts=hosts)
    if isinstance(exc, ConnectionLoss | OperationTimeoutError | KazooTimeoutError):
        return ConnectionInterrupted(
            f"ZooKeeper connection interrupted during a call on {path} ({hosts})", hosts=hosts
        )
    return ZooKeeperError(f"ZooKeeper error on {path}: {exc!r}", hosts=hosts)


class ZooKeeperClient:
    """One ZooKeeper session; use `open_zookeeper` to get one."""

    def __init__(self, config: ZooKeeperConfig, kazoo: Any, limiter: trio.CapacityLimiter) -> None:
        self.config = config
        self._kazoo = kazoo
        self._limiter = limiter
        self._token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[ConnectionEvent](STATE_QUEUE_LIMIT)
        self._state_send = send
        self.connection_events: trio.MemoryReceiveChannel[ConnectionEvent] = receive
        self.state = ConnectionState.CONNECTED
        self.missed_events = 0
        kazoo.add_listener(self._on_state)

    # -- kazoo's thread: hand over, never block -------------------------------------------

    def _on_state(self, state: Any) -> None:
        mapped = {
            KazooState.CONNECTED: ConnectionState.CONNECTED,
            KazooState.SUSPENDED: ConnectionState.SUSPENDED,
            KazooState.LOST: ConnectionState.LOST,
        }[state]
        event = ConnectionEvent(mapped, time.monotonic())
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._deliver_state, event)

    def _watcher(self, watch: Watch) -> Callable[[Any], None]:
        def on_event(raw: Any) -> None:
            kind = {
                "CREATED": WatchKind.CREATED,
                "DELETED": WatchKind.DELETED,
                "CHANGED": WatchKind.CHANGED,
                "CHILD": WatchKind.CHILDREN,
            }.get(str(raw.type), WatchKind.NONE)
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(watch._fire, WatchEvent(kind, raw.path))

        return on_event

    # -- trio's thread ------------------------------------------------------------------

    def _deliver_state(self, event: ConnectionEvent) -> None:
        self.state = event.state
        try:
            self._state_send.send_nowait(event)
        except trio.WouldBlock:
            self.missed_events += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _call(self, path: str, fn: Callable[[], T]) -> T:
        """Run one blocking kazoo call in a worker thread, translating its errors."""
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except (KazooException, KazooTimeoutError) as exc:
            raise _translate(exc, path, self.config.hosts, self._kazoo.state) from exc

    def _wait(self, async_result: Any) -> Any:
        return async_result.get(timeout=self.config.request_timeout_s)

    @property
    def session_id(self) -> int:
        return int(self._kazoo.client_id[0]) if self._kazoo.client_id else 0

    async def create(
        self,
        path: str,
        value: bytes = b"",
        *,
        ephemeral: bool = False,
        sequence: bool = False,
        makepath: bool = False,
    ) -> str:
        """Create a node; returns its path (with the sequence suffix when ``sequence``)."""
        fn = functools.partial(
            self._kazoo.create_async,
            path,
            value,
            ephemeral=ephemeral,
            sequence=sequence,
            makepath=makepath,
        )
        return str(await self._call(path, lambda: self._wait(fn())))

    async def ensure_path(self, path: str) -> None:
        await self._call(path, lambda: self._wait(self._kazoo.ensure_path_async(path)))

    async def get(self, path: str) -> tuple[bytes, NodeStat]:
        data, stat = await self._call(path, lambda: self._wait(self._kazoo.get_async(path)))
        return bytes(data or b""), _stat(stat)

    async def get_watched(self, path: str) -> tuple[bytes, NodeStat, Watch]:
        """Like `get`, plus a watch that fires when the node changes or is deleted."""
        watch = Watch()
        call = functools.partial(self._kazoo.get_async, path, watch=self._watcher(watch))
        data, stat = await self._call(path, lambda: self._wait(call()))
        return bytes(data or b""), _stat(stat), watch

    async def exists(self, path: str) -> NodeStat | None:
        stat = await self._call(path, lambda: self._wait(self._kazoo.exists_async(path)))
        return None if stat is None else _stat(stat)

    async def exists_watched(self, path: str) -> tuple[NodeStat | None, Watch]:
        """Like `exists`, plus a watch that fires on creation, change or deletion."""
        watch = Watch()
        call = functools.partial(self._kazoo.exists_async, path, watch=self._watcher(watch))
        stat = await self._call(path, lambda: self._wait(call()))
        return (None if stat is None else _stat(stat)), watch

    async def get_children(self, path: str) -> list[str]:
        children = await self._call(path, lambda: self._wait(self._kazoo.get_children_async(path)))
        return sorted(str(c) for c in children)

    async def get_children_watched(self, path: str) -> tuple[list[str], Watch]:
        watch = Watch()
        call = functools.partial(self._kazoo.get_children_async, path, watch=self._watcher(watch))
        children = await self._call(path, lambda: self._wait(call()))
        return sorted(str(c) for c in children), watch

    async def set(self, path: str, value: bytes, *, version: int = -1) -> NodeStat:
        """Replace the node's data; with ``version`` >= 0, only if it still has that version."""
        call = functools.partial(self._kazoo.set_async, path, value, version)
        return _stat(await self._call(path, lambda: self._wait(call())))

    async def transaction(self, ops: Sequence[TxnOp]) -> None:
        """Apply every step of ``ops`` atomically, or none of them.

        When a step fails, raises that step's error (`BadVersion`, `NoNode`, `NodeExists`, ...)
        naming its path; steps rolled back because of it are not reported.
        """
        if not ops:
            return
        where = ops[0].path
        results = await self._call(where, lambda: self._wait(self._transaction(ops)))
        for op, result in zip(ops, results, strict=False):
            if isinstance(result, RolledBackError | RuntimeInconsistency):
                continue
            if isinstance(result, KazooException):
                raise _translate(result, op.path, self.config.hosts, self._kazoo.state) from result
        for result in results:  # only roll-backs: ZooKeeper names no culprit
            if isinstance(result, KazooException):
                raise _translate(result, where, self.config.hosts, self._kazoo.state) from result

    def _transaction(self, ops: Sequence[TxnOp]) -> Any:  # worker thread
        txn = self._kazoo.transaction()
        for op in ops:
            if isinstance(op, TxnCheck):
                txn.check(op.path, op.version)
            elif isinstance(op, TxnSet):
                txn.set_data(op.path, op.value, op.version)
            elif isinstance(op, TxnCreate):
                txn.create(op.path, op.value, ephemeral=op.ephemeral)
            else:
                txn.delete(op.path, op.version)
        return txn.commit_async()

    async def delete(self, path: str, *, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            await self._call(path, lambda: self._delete_tree(path))
        else:
            call = functools.partial(self._kazoo.delete_async, path, version)
            await self._call(path, lambda: self._wait(call()))

    def _delete_tree(self, path: str) -> None:  # worker thread
        try:
            children = self._wait(self._kazoo.get_children_async(path))
        except NoNodeError:
            return
        for child in children:
            self._delete_tree(f"{path.rstrip('/')}/{child}")
        if path in ("", "/"):
            return
        with suppress(NoNodeError):
            self._wait(self._kazoo.delete_async(path))

    async def expire_session(self) -> None:
        """Make the server expire this session, as a network partition longer than the timeout
        would: a second connection joins the session with its id and password and closes it.

        For tests and operator drills; the client then sees LOST and opens a new session.
        """
        client_id = self._kazoo.client_id
        if not client_id:
            raise SessionLost("no session to expire", hosts=self.config.hosts)

        def expire() -> None:
            twin = _new_kazoo(self.config, with_chroot=False, client_id=client_id)
            _start_or_raise(twin, self.config)
            _close_quietly(twin)

        await trio.to_thread.run_sync(expire, limiter=self._limiter)

    async def aclose(self) -> None:
        """Close the session (its ephemeral nodes vanish at once)."""
        self._kazoo.remove_listener(self._on_state)
        await trio.to_thread.run_sync(_close_quietly, self._kazoo, limiter=self._limiter)
        self._state_send.close()


@asynccontextmanager
async def open_zookeeper(
    config: ZooKeeperConfig, *, limiter: trio.CapacityLimiter | None = None
) -> AsyncIterator[ZooKeeperClient]:
    """Open a session (creating the chroot when missing), close it on exit.

    Raises `ZooKeeperUnavailable` naming the hosts when no session opens within
    ``connect_timeout_s``.
    """
    limiter = limiter or trio.CapacityLimiter(DEFAULT_THREADS)
    await trio.to_thread.run_sync(_ensure_chroot, config, limiter=limiter)
    kazoo = _new_kazoo(config, with_chroot=True)
    await trio.to_thread.run_sync(_start_or_raise, kazoo, config, limiter=limiter)
    client = ZooKeeperClient(config, kazoo, limiter)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
