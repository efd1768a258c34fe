"""The trio Scribe server: a thin loop around ``codec.ServerConnection``.

One task per connection reads, feeds the codec, hands each complete call to the handler and
writes the reply, one call at a time, so replies leave in the order the calls came.  The codec
decides everything about bytes; this module only adds time (read, idle and drain timeouts),
the resources shared by all connections, and logging.  Log lines are ``event key=value ...``.

Who may connect is the gate's (``gate.ConnectionGate``, from the ``policy`` the application
gives): a peer outside the allowlist is closed at accept, before it takes a slot or a byte is
read; with TLS the handshake (bounded by its timeout; the connection counts as idle meanwhile)
and the client allowlist come before the first read.

Shared resources, and what keeps one client from taking them:

* Connection slots (``max_connections``): when all are taken, the connection idle the longest
  with no call in progress is closed to let the new one in; only when every connection is busy
  is the new one refused.
* Buffer memory (``max_buffered_bytes``, ``budget.ReceiveBudget``): the bytes of calls still
  arriving, over all connections; a call too large for one read reserves its whole size, and
  when the budget is spent its connection waits its turn, within its read timeout.
* The event loop: large calls are decoded (and large results encoded) in a worker thread, so
  one client's 16 MiB call does not hold every other client's small one; and large calls are
  handled ``codec_threads`` at a time, from decoding to the handler's answer, so that only one
  thread at a time works through a large call's entries (decoding it, or the journal packing
  it) and competes with the event loop's thread for the GIL.
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import trio
from annotated_types import Interval

from scribe_compat.access import check_allow
from scribe_compat.batch import LogBatch
from scribe_compat.budget import ReceiveBudget, Reservation
from scribe_compat.codec import (
    CLOSED,
    NEED_DATA,
    Call,
    CodecLimits,
    LargeFrame,
    Message,
    MiB,
    RejectedCall,
    ServerConnection,
)
from scribe_compat.errors import ProtocolError, TlsRefused
from scribe_compat.gate import ConnectionGate, ConnectionPolicy
from scribe_compat.idl import AppErrorType, FbStatus, ResultCode
from scribe_compat.ranges import check_declared_ranges
from scribe_compat.tls import TlsConfig

log = logging.getLogger(__name__)

HOUR_S = 3600.0

# Under a flood (refused, evicted or waiting connections) at most one line a second per kind;
# each line carries the running total, so the count is never lost.
_LOG_INTERVAL_S = 1.0


class ScribeHandler(Protocol):
    """What the application implements; ``log`` must answer TRY_LATER rather than wait long.

    The batch ``log`` is given is the handler's only while it runs: a large one's columns are
    emptied once the call is answered (``_free_entries``)."""

    async def log(self, batch: LogBatch) -> ResultCode: ...
    def get_name(self) -> str: ...
    def get_version(self) -> str: ...
    def get_status(self) -> FbStatus: ...
    def get_status_details(self) -> str: ...
    def get_counters(self) -> dict[str, int]: ...
    def get_counter(self, key: str) -> int: ...
    def set_option(self, key: str, value: str) -> None: ...
    def get_option(self, key: str) -> str: ...
    def get_options(self) -> dict[str, str]: ...
    def get_cpu_profile(self, seconds: int) -> str: ...
    def alive_since(self) -> int: ...
    async def reinitialize(self) -> None: ...
    async def shutdown(self) -> None: ...


@dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` settings."""

    # Loopback unless told otherwise: the server has no authentication of its own.
    host: str = "127.0.0.1"
    # Scribe's conventional port.
    port: Annotated[int, Interval(ge=0, le=65535)] = 1463
    # Each connection costs a task, a descriptor and one read of buffer (receive_size; all
    # else it buffers comes from max_buffered_bytes): 1024 holds a few hundred persistent
    # forwarder connections, as real fleets keep, with room to spare.  When all are taken the
    # longest-idle connection gives its slot to the new one.
    # At most a million, Linux's ceiling of descriptors for one process (nr_open).
    max_connections: Annotated[int, Interval(gt=0, le=1 << 20)] = 1024
    limits: CodecLimits = field(default_factory=CodecLimits)
    # A started message must be complete within this time, however slowly it drips in: a
    # 16 MiB call needs under a second on any LAN, 30 s leaves room for slow WAN links.
    read_timeout_s: Annotated[float, Interval(gt=0, le=HOUR_S)] = 30.0
    # Forwarders keep connections open between batches; an hour of silence means the peer is
    # gone (or stuck) and its slot is better given to someone else.
    idle_timeout_s: Annotated[float, Interval(gt=0, le=7 * 24 * HOUR_S)] = HOUR_S
    # On stop, calls in progress get this long to finish before their connections are cut.
    drain_timeout_s: Annotated[float, Interval(gt=0, le=HOUR_S)] = 10.0
    # Bytes asked of the socket per read: a 1000-entry batch of 200-byte messages (~210 KB)
    # arrives in one read; measured 6% more ingest than 64 KiB.  The buffer is transient.
    # At most 64 MiB: each read allocates this much, on every connection that reads.
    receive_size: Annotated[int, Interval(gt=0, le=64 * MiB)] = 262144
    # Bytes buffered for calls still arriving, over all connections together: a call larger
    # than one read reserves its whole size here before its connection reads on (one read of
    # each connection comes on top).  256 MiB lets sixteen calls of the largest size, or a
    # thousand ordinary batches, arrive at once, as much as admission lets wait for the disk
    # (max_pending_bytes).  Past it a connection waits its turn instead of growing memory.
    # At most 1 TiB: past any machine's memory, so plainly a mistake.
    max_buffered_bytes: Annotated[int, Interval(gt=0, le=1 << 40)] = 256 * MiB
    # Log calls in the common shape (category, message, perhaps metadata) this large or
    # larger are decoded in a worker thread: the codec slices them at ~250 MB/s (~50 MB/s
    # with four metadata pairs per entry), so 512 KiB holds the event loop 2-10 ms, while
    # the 1000-message batches of forwarders (~210 KB) stay on the loop, where they cost no
    # thread hop.
    thread_decode_bytes: Annotated[int, Interval(gt=0, le=1 << 32)] = 512 * 1024
    # Every other call this large or larger (unknown fields, other methods) is decoded in a
    # worker thread: the general decoder walks and decodes 20-50 MB/s, so 64 KiB holds the
    # loop 1-3 ms.
    thread_decode_other_bytes: Annotated[int, Interval(gt=0, le=1 << 32)] = 64 * 1024
    # Results with this many elements or more (getCounters, getOptions) are encoded in a
    # worker thread: 10,000 counters take ~2-4 ms to encode.
    thread_encode_items: Annotated[int, Interval(gt=0, le=1 << 31)] = 10_000
    # Worker threads decoding or encoding at once, and large Log calls (thread_decode_bytes
    # and up) handled at once, from decoding to their journal append.  Decoding and packing
    # hold the GIL, so a second thread adds no speed, only more competition for the event
    # loop's turn: under four clients sending 16 MiB calls, one large call at a time (instead
    # of decoding one while the journal packs another) cut a one-message call's median wait
    # from ~20 to ~6 ms and its maximum from ~230-350 to ~60-120 ms, with more large calls
    # through.  The others wait their turn with their bytes received (max_buffered_bytes).
    codec_threads: Annotated[int, Interval(gt=0, le=64)] = 1
    # How long a thread may hold the GIL while another waits for it (`sys.setswitchinterval`,
    # which the daemon sets for its process).  Python's 5 ms makes the event loop's thread wait
    # that long at every turn while a worker thread decodes or packs a large call; at 1 ms a
    # one-message call's median wait under four 16 MiB calls fell from 104 to 9 ms, for about
    # a fifth less of those large calls' throughput.
    switch_interval_s: Annotated[float, Interval(gt=0, le=0.1)] = 0.001
    # Allocations between young-generation garbage collections (``gc.set_threshold``, which the
    # daemon sets for its process, after freezing what start-up allocated).  Python's 700 makes
    # a 100,000-entry call with metadata run ~140 collections while it is decoded and as many
    # while it is packed, and the full ones among them hold the GIL 30-90 ms; the log path's
    # objects are not cyclic, so collecting them that often frees nothing.
    gc_young_threshold: Annotated[int, Interval(ge=100, le=10_000_000)] = 100_000
    # Whether any client may call fb303 shutdown and reinitialize, as in Scribe.  Unset: only
    # when bound to a loopback address, where every client is on this host; a server open to
    # the network refuses them (and counts the refusals) unless this says true.
    allow_remote_shutdown: bool | None = None
    # CIDR networks peers may connect from; any other peer is closed at accept, before a byte
    # is read.  Unset (``access.peer_filter``): every peer when host is loopback, else only
    # loopback and private networks (RFC 1918, link-local, IPv6 unique local).
    allow: tuple[str, ...] | None = None
    # TLS on this port (off unless tls.cert is set).
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __post_init__(self) -> None:
        check_allow(self.allow)
        check_declared_ranges(self)
        if self.max_buffered_bytes < self.limits.max_unparsed_bytes:
            # Otherwise a call of the largest allowed size could never be received.
            raise ValueError("max_buffered_bytes must be at least limits.max_unparsed_bytes")


def _kv(**fields: object) -> str:
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\n\\'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _peer_of(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


class _Connection:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.scope = trio.CancelScope()
        # Waiting for the first byte of a call (nothing buffered, nothing in progress).
        self.idle = False
        self.idle_since = 0.0
        # The scope of the current wait for data; cancelled to evict an idle connection.
        self.wait_scope: trio.CancelScope | None = None
        self.evicted = False


class _Throttle:
    """Says when the next log line of one kind is due: at most one per ``_LOG_INTERVAL_S``."""

    def __init__(self) -> None:
        self._last = -math.inf

    def due(self) -> bool:
        now = trio.current_time()
        if now - self._last < _LOG_INTERVAL_S:
            return False
        self._last = now
        return True


class ScribeServer:
    """Handle to a running server: its bound address, open connections, counters, ``drain``.

    ``counters`` are the server's own figures (connections refused and evicted, buffer budget);
    the application adds them to what its fb303 ``getCounters`` answers.
    """

    def __init__(
        self,
        handler: ScribeHandler,
        config: ServerConfig,
        listeners: list[trio.SocketListener],
        policy: ConnectionPolicy | None = None,
    ) -> None:
        self.handler = handler
        # Who may connect (peer allowlist, TLS); a reload may replace ``gate.policy``.
        self.gate = ConnectionGate(policy or ConnectionPolicy(), "server")
        self._budget = ReceiveBudget(config.max_buffered_bytes)
        self._codec_threads = trio.CapacityLimiter(config.codec_threads)
        self._large_calls = trio.CapacityLimiter(config.codec_threads)
        self._config = config
        self._listeners = listeners
        sockname = listeners[0].socket.getsockname()
        self.address: tuple[str, int] = (sockname[0], sockname[1])
        self._connections: set[_Connection] = set()
        # The idle connections, oldest first (a dict keeps insertion order; a connection is
        # removed when it wakes and added again when it next waits).
        self._idle: dict[_Connection, None] = {}
        self._accept_scope = trio.CancelScope()
        self._draining = False
        self._all_closed = trio.Event()
        self._drained = trio.Event()
        self.rejected_connections = 0
        self.evicted_connections = 0
        self.thread_decoded_calls = 0
        # Large calls received and waiting for their turn (``codec_threads`` at a time).
        self.large_calls_waiting = 0
        self._reject_log = _Throttle()
        self._evict_log = _Throttle()
        self._budget_log = _Throttle()

    @property
    def config(self) -> ServerConfig:
        return self._config

    @config.setter
    def config(self, config: ServerConfig) -> None:
        # On reload: the shared budget and thread count change at once; per-connection limits
        # apply to connections accepted from now on.
        self._config = config
        self._budget.resize(config.max_buffered_bytes)
        self._codec_threads.total_tokens = config.codec_threads
        self._large_calls.total_tokens = config.codec_threads

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def counters(self) -> dict[str, int]:
        """The server's own fb303 counters."""
        return {
            "server:connections open": len(self._connections),
            "server:connections refused": self.rejected_connections,
            "server:connections evicted": self.evicted_connections,
            "server:buffered bytes reserved": self._budget.in_use,
            "server:buffer budget waits": self._budget.waits,
            "server:calls decoded in threads": self.thread_decoded_calls,
            "server:large calls waiting": self.large_calls_waiting,
            **self.gate.counters(),
        }

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self) -> None:
        """Stop accepting; let calls in progress finish (up to drain_timeout_s); close all."""
        if not self._draining:
            self._draining = True
            self._accept_scope.cancel()
            for conn in list(self._connections):
                if conn.idle:
                    conn.scope.cancel()
            self._check_all_closed()
            with trio.move_on_after(self.config.drain_timeout_s):
                await self._all_closed.wait()
            for conn in list(self._connections):
                log.warning(
                    "drain timeout: closing connection %s",
                    _kv(peer=conn.peer, drain_timeout_s=self.config.drain_timeout_s),
                )
                conn.scope.cancel()
            await self._all_closed.wait()
            self._drained.set()
        await self._drained.wait()

    def _check_all_closed(self) -> None:
        if self._draining and not self._connections:
            self._all_closed.set()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        try:
            await self._accept_connections(listener, nursery)
        finally:
            await listener.aclose()  # closes the socket first, then checkpoints

    async def _accept_connections(
        self, listener: trio.SocketListener, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                # Out of file descriptors and the like: say so, back off, keep serving.
                log.error("accept failed %s", _kv(error=exc))
                await trio.sleep(0.1)
                continue
            if not self.gate.admits(stream):  # before it may take a slot or evict anyone
                await trio.aclose_forcefully(stream)
                continue
            if len(self._connections) >= self.config.max_connections and not self._evict_one():
                self._reject(stream)
                await stream.aclose()
                continue
            conn = _Connection(_peer_of(stream))
            self._connections.add(conn)  # counted now, so a burst cannot overshoot the limit
            nursery.start_soon(self._serve_connection, stream, conn)

    def _evict_one(self) -> bool:
        """Close the longest-idle connection to free its slot; False if none is idle."""
        victim = next(iter(self._idle), None)
        if victim is None:
            return False
        del self._idle[victim]
        # It stops counting now; its task closes the socket at its next checkpoint.
        self._connections.discard(victim)
        victim.evicted = True
        if victim.wait_scope is not None:
            victim.wait_scope.cancel()
        self.evicted_connections += 1
        if self._evict_log.due():
            log.warning(
                "connection evicted: idle the longest, its slot given to a new connection %s",
                _kv(
                    peer=victim.peer,
                    idle_s=round(trio.current_time() - victim.idle_since, 1),
                    max_connections=self.config.max_connections,
                    evicted_total=self.evicted_connections,
                ),
            )
        return True

    def _reject(self, stream: trio.SocketStream) -> None:
        self.rejected_connections += 1
        if self._reject_log.due():
            log.warning(
                "connection refused: too many connections, none idle %s",
                _kv(
                    peer=_peer_of(stream),
                    max_connections=self.config.max_connections,
                    refused_total=self.rejected_connections,
                ),
            )

    async def _serve_connection(self, stream: trio.SocketStream, conn: _Connection) -> None:
        log.debug("connection opened %s", _kv(peer=conn.peer))
        reason = "closed by peer"
        try:
            with conn.scope:
                secured = await self._secure(stream, conn)
                reason = (
                    "evicted" if secured is None else await self._connection_loop(secured, conn)
                )
            if conn.scope.cancelled_caught:
                reason = "server draining"
        except TlsRefused as exc:
            reason = exc.reason  # logged and counted by the gate
        except ProtocolError as exc:
            reason = exc.reason
            log.warning(
                "protocol error: closing connection %s",
                _kv(peer=conn.peer, error=type(exc).__name__, reason=exc.reason),
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = f"transport: {exc}"
        except Exception as exc:
            # A bug of ours (the codec's contract is ProtocolError only): lose this connection,
            # never the server.
            reason = f"internal error: {type(exc).__name__}"
            log.exception("internal error: closing connection %s", _kv(peer=conn.peer))
        finally:
            self._connections.discard(conn)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            log.debug("connection closed %s", _kv(peer=conn.peer, reason=reason))
            self._check_all_closed()

    async def _secure(self, stream: trio.SocketStream, conn: _Connection) -> trio.abc.Stream | None:
        """The connection's stream after the TLS handshake (itself without TLS); None when it
        was evicted meanwhile.  A client in its handshake counts as idle: it has sent no call,
        so under a flood of them it gives its slot to a new connection like any idle one."""
        if self.gate.policy.tls is None:
            return stream
        self._mark_idle(conn)
        with trio.CancelScope() as conn.wait_scope:
            secured = await self.gate.secure(stream, conn.peer)
        conn.wait_scope = None
        self._mark_busy(conn)
        return None if conn.evicted else secured

    async def _connection_loop(self, stream: trio.abc.Stream, conn: _Connection) -> str:
        reservation = Reservation(self._budget)
        try:
            return await self._serve_calls(stream, conn, reservation)
        finally:
            reservation.release()
            self._idle.pop(conn, None)

    async def _serve_calls(
        self, stream: trio.abc.Stream, conn: _Connection, reservation: Reservation
    ) -> str:
        config = self.config
        codec = ServerConnection(config.limits)
        deadline = math.inf  # when the partially received message must be complete
        while True:
            message = codec.next_message()
            if message is NEED_DATA:
                buffered = codec.buffered
                if not buffered:
                    if self._draining:
                        return "server draining"
                    if conn.evicted:
                        return "evicted"
                    deadline = math.inf
                    timeout = config.idle_timeout_s
                    self._mark_idle(conn)
                else:
                    if deadline == math.inf:
                        deadline = trio.current_time() + config.read_timeout_s
                    timeout = deadline - trio.current_time()
                data = None
                waited_for_budget = False
                with trio.move_on_after(timeout) as conn.wait_scope:
                    if buffered and not reservation.held:
                        need = self._budget_needed(codec, buffered)
                        if need:
                            waited_for_budget = self._budget.free < need or bool(
                                self._budget.waiting
                            )
                            if waited_for_budget:
                                self._note_budget_wait(conn, buffered, need)
                            await reservation.hold(need)
                    # Never more than the allowance (one read) plus what is reserved.
                    room = config.receive_size + reservation.held - buffered
                    data = await stream.receive_some(min(room, config.receive_size))
                conn.wait_scope = None
                self._mark_busy(conn)
                if data is not None:
                    codec.receive_data(data)
                    continue
                if conn.evicted:
                    return "evicted"
                if buffered:
                    log.warning(
                        "read timeout: closing connection %s",
                        _kv(
                            peer=conn.peer,
                            buffered_bytes=buffered,
                            read_timeout_s=config.read_timeout_s,
                            waited_for_buffer_budget=waited_for_budget,
                        ),
                    )
                    return "read timeout"
                log.info(
                    "idle timeout: closing connection %s",
                    _kv(peer=conn.peer, idle_timeout_s=config.idle_timeout_s),
                )
                return "idle timeout"
            if message is CLOSED:
                return "closed by peer"
            deadline = math.inf
            if message.size >= config.thread_decode_bytes:
                await self._answer_large(stream, codec, message, conn.peer)
            else:
                event = await self._decode(codec, message)
                reply = await self._dispatch(codec, event, conn.peer)
                if reply:
                    await stream.send_all(reply)
            # The call is answered: the bytes its reservation stood for are gone.
            reservation.release()
            if self._draining:  # the call in progress is finished: that is all a drain waits for
                return "server draining"

    def _mark_idle(self, conn: _Connection) -> None:
        conn.idle = True
        conn.idle_since = trio.current_time()
        self._idle[conn] = None  # the newest idle connection: last in the eviction order

    def _mark_busy(self, conn: _Connection) -> None:
        if conn.idle:
            conn.idle = False
            self._idle.pop(conn, None)

    def _budget_needed(self, codec: ServerConnection, buffered: int) -> int:
        """What the message being received must reserve before reading on: nothing while it
        fits the connection's own read, else its whole size (see ``budget``)."""
        size = codec.incoming_message_bytes
        allowance = self.config.receive_size
        if size is not None:
            return size if size > allowance else 0
        # Unframed: its end is found only when reached, so reserve the most it may be.
        return codec.limits.max_message_bytes if buffered >= allowance else 0

    def _note_budget_wait(self, conn: _Connection, buffered: int, need: int) -> None:
        if self._budget_log.due():
            log.warning(
                "buffer budget spent: connection waits before reading more %s",
                _kv(
                    peer=conn.peer,
                    buffered_bytes=buffered,
                    message_bytes=need,
                    max_buffered_bytes=self._budget.total,
                    waits_total=self._budget.waits + 1,
                ),
            )

    async def _answer_large(
        self,
        stream: trio.abc.Stream,
        codec: ServerConnection,
        message: Message | LargeFrame,
        peer: str,
    ) -> None:
        """A large call in its turn (``codec_threads`` at a time): decoded, answered, and its
        entries freed in a worker thread."""
        self.large_calls_waiting += 1
        try:
            await self._large_calls.acquire()
        finally:
            self.large_calls_waiting -= 1
        try:
            event = await self._decode(codec, message)
            reply = await self._dispatch(codec, event, peer)
            if reply:
                await stream.send_all(reply)
            if isinstance(event, Call) and event.batch is not None:
                # This frame holds the last reference to the call: the thread takes it over.
                answered = [event]
                del event
                await trio.to_thread.run_sync(_free_entries, answered, limiter=self._codec_threads)
        finally:
            self._large_calls.release()

    async def _decode(
        self, codec: ServerConnection, message: Message | LargeFrame
    ) -> Call | RejectedCall:
        """Small calls on the loop; large ones in a worker thread (see ``ServerConfig``)."""
        config = self.config
        if message.size >= config.thread_decode_bytes:
            # Joining a large frame's reads is part of the work the thread takes off the loop.
            self.thread_decoded_calls += 1
            return await trio.to_thread.run_sync(codec.decode, message, limiter=self._codec_threads)
        if isinstance(message, LargeFrame):  # only when thread_decode_bytes is above a MiB
            message = codec.assemble(message)
        call = codec.decode_common_log(message)
        if call is not None:
            return call
        if message.size < config.thread_decode_other_bytes:
            return codec.decode_general(message)
        self.thread_decoded_calls += 1
        return await trio.to_thread.run_sync(
            codec.decode_general, message, limiter=self._codec_threads
        )

    async def _dispatch(
        self, codec: ServerConnection, event: Call | RejectedCall, peer: str
    ) -> bytes:
        if isinstance(event, RejectedCall):
            log.warning(
                "call rejected %s",
                _kv(
                    peer=peer,
                    method=event.name.decode("utf-8", "backslashreplace"),
                    reason=event.error.reason,
                ),
            )
            return codec.reply_rejected(event)
        try:
            value = await self._call_handler(event)
        except Exception as exc:
            log.exception(
                "handler failed %s", _kv(peer=peer, method=event.name, error=type(exc).__name__)
            )
            return codec.reply_exception(
                event, AppErrorType.INTERNAL_ERROR, f"internal error in {event.name}"
            )
        try:
            if _element_count(value) >= self.config.thread_encode_items:
                return await trio.to_thread.run_sync(
                    codec.reply, event, value, limiter=self._codec_threads
                )
            return codec.reply(event, value)
        except Exception as exc:
            log.exception(
                "cannot encode result %s",
                _kv(peer=peer, method=event.name, error=type(exc).__name__),
            )
            return codec.reply_exception(
                event, AppErrorType.INTERNAL_ERROR, f"internal error in {event.name}"
            )

    async def _call_handler(self, call: Call) -> object:
        handler = self.handler
        name = call.name
        args = call.args
        if name == "Log":
            result = await handler.log(call.log_batch)
            return int(ResultCode(result))
        if name == "getName":
            return handler.get_name()
        if name == "getVersion":
            return handler.get_version()
        if name == "getStatus":
            return int(FbStatus(handler.get_status()))
        if name == "getStatusDetails":
            return handler.get_status_details()
        if name == "getCounters":
            return handler.get_counters()
        if name == "getCounter":
            return handler.get_counter(_text(args.key))
        if name == "getSelectedCounters":
            counters = handler.get_counters()
            keys = [_text(k) for k in args.keys]
            return {k: counters[k] for k in keys if k in counters}
        if name == "setOption":
            handler.set_option(_text(args.key), _text(args.value))
            return None
        if name == "getOption":
            return handler.get_option(_text(args.key))
        if name == "getOptions":
            return handler.get_options()
        if name == "getCpuProfile":
            return handler.get_cpu_profile(int(args.profileDurationInSec))
        if name == "aliveSince":
            return handler.alive_since()
        if name == "reinitialize":
            await handler.reinitialize()
            return None
        if name == "shutdown":
            await handler.shutdown()
            return None
        raise AssertionError(f"no dispatch for {name!r}")  # METHODS and this table disagree


# Entries freed per step when a large call's columns are let go: freeing 100,000 entries at
# once is one step of C that holds the GIL (~4 ms plain, ~25 ms with four metadata pairs per
# entry), so they are freed 1024 at a time, between which the event loop's thread may run.
_FREE_SLICE_ENTRIES = 1024


def _free_entries(answered: list[Call]) -> None:
    """Free the columns of the answered call in ``answered`` (its last reference), slice by
    slice (worker thread).  The handler had the batch only while its ``log`` ran."""
    call = answered.pop()
    assert call.batch is not None
    batch = call.batch
    entries = [] if call.args is None else call.args.messages  # thriftpy2's, when it decoded
    for column in (batch.messages, batch.categories, batch.metadata or [], entries):
        while column:
            del column[-_FREE_SLICE_ENTRIES:]


def _element_count(value: object) -> int:
    return len(value) if isinstance(value, (dict, list)) else 0


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


async def serve_scribe(
    handler: ScribeHandler,
    config: ServerConfig | None = None,
    *,
    policy: ConnectionPolicy | None = None,
    task_status: trio.TaskStatus[ScribeServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Scribe on ``config.host:config.port`` until cancelled or drained.

    ``policy`` says who may connect (every peer, in plaintext, when None); the application
    builds it from ``config.allow`` and ``config.tls``.  Reports a ``ScribeServer`` through
    ``task_status`` once listening; returns after ``ScribeServer.drain`` has closed every
    connection.
    """
    config = config or ServerConfig()
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    for listener in listeners:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    server = ScribeServer(handler, config, listeners, policy)
    try:
        async with trio.open_nursery() as connections:
            with server._accept_scope:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(server._accept_loop, listener, connections)
                    task_status.started(server)
            await server._drained.wait()
    finally:
        for listener in listeners:
            listener.socket.close()
