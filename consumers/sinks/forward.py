"""The forwarding sink: Scribe's network store toward any Scribe-compatible upstream.

* One connection, framed transport, non-strict binary (what Scribe's own network store speaks);
  calls on it are serialized, so batches of one partition reach the upstream in offset order.
* Before a call over ``probe_threshold_bytes`` (4096, as Scribe) an empty ``Log([])`` asks
  whether the upstream has room; TRY_LATER to the probe counts as TRY_LATER to the batch.
* OK: delivered (counter ``sent``).  TRY_LATER: keep the batch, wait (capped, jittered
  backoff) and send it again (counter ``retries``).  A transport error, timeout or bad reply:
  close the connection, back off, reconnect, send again (``retries`` and ``reconnects``).
* Each entry goes with its original category: the metadata key ``scribe_category`` (where the
  catch-all route keeps it) overrides the partition's category.
* Each entry carries its origin (``scribe_origin``, `consumers.origin`): where it was first
  journaled, kept when it already has one, so the materializers of every tier downstream write
  it as one event however many hops or redundant aggregators it passes.  An entry with an origin
  keeps ``scribe_category`` too, so that every tier sees the same metadata.
* A daemon's sink retries until cancelled (or ``max_attempts``); ``give_up_after_s`` (what
  ``pipeline journal replay --max-retry-time`` passes) raises SinkError, naming the attempts
  and the last reason, once a call has been failing that long.
* A call cancelled half way closes the connection (a reply may still be in flight).  After a
  transport error the upstream may have stored the batch: the resend is a duplicate, never a gap.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence

import trio

from consumers.backoff import Backoff
from consumers.config import ForwardSinkConfig
from consumers.origin import ORIGIN_KEY, local_origin
from consumers.sinks.base import ORIGINAL_CATEGORY_KEY, SinkError, original_category
from journal import JournalMessage, PartitionId
from scribe_compat import AsyncScribeClient, ClientError, LogEntry, ResultCode

log = logging.getLogger(__name__)


class _TryLater(Exception):  # noqa: N818 (internal control flow, never escapes)
    pass


def _entry(journal_id: uuid.UUID | None, pid: PartitionId, message: JournalMessage) -> LogEntry:
    metadata = dict(message.metadata) if message.metadata else {}
    if journal_id is not None and ORIGIN_KEY not in metadata:
        metadata[ORIGIN_KEY] = local_origin(journal_id, pid, message).encode()
    if ORIGIN_KEY not in metadata:
        # The entry goes with its original category; the key has said all it had to.
        metadata.pop(ORIGINAL_CATEGORY_KEY, None)
    # With an origin the key stays: the origin names the catch-all partition the event was
    # journaled in, and downstream tiers must see the same event (metadata included) as here.
    return LogEntry(
        category=original_category(pid, message), message=message.message, metadata=metadata or None
    )


class ForwardSink:
    """Forwards batches to ``config.host:config.port``; see the module docstring."""

    def __init__(
        self,
        config: ForwardSinkConfig,
        *,
        journal_id: uuid.UUID | Callable[[], uuid.UUID] | None = None,
        rng: random.Random | None = None,
        give_up_after_s: float | None = None,
    ) -> None:
        """``journal_id`` (or a function reading it) is the journal read, for the origin
        stamp; without one, entries are forwarded unstamped.  ``give_up_after_s``: see the
        module docstring (None: retry until cancelled)."""
        self._config = config
        self._give_up_after_s = give_up_after_s
        self._journal_id = journal_id
        self._rng = rng if rng is not None else random.Random()
        self._lock = trio.Lock()
        self._client: AsyncScribeClient | None = None
        self._closed = False
        self._counters = {
            "sent": 0,
            "failed calls": 0,
            "try later": 0,
            "reconnects": 0,
            "probes": 0,
            "calls": 0,
        }

    def metrics(self) -> dict[str, int]:
        return dict(self._counters)

    async def write(self, pid: PartitionId, messages: Sequence[JournalMessage]) -> None:
        source = self._journal_id
        journal_id = source() if callable(source) else source
        entries = [_entry(journal_id, pid, m) for m in messages]
        step = self._config.max_entries_per_call
        for start in range(0, len(entries), step):
            await self._send(pid, entries[start : start + step])

    async def aclose(self) -> None:
        self._closed = True
        async with self._lock:
            await self._disconnect()

    async def _connect(self) -> AsyncScribeClient:
        if self._client is None:
            config = self._config
            self._client = await AsyncScribeClient.connect(
                config.host, config.port, config.timeout_s, framed=True, strict=False
            )
            self._counters["reconnects"] += 1
        return self._client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _call(self, entries: list[LogEntry], size: int) -> None:
        client = await self._connect()
        done = False
        try:
            if size > self._config.probe_threshold_bytes:
                self._counters["probes"] += 1
                if await client.log([]) is not ResultCode.OK:
                    done = True
                    raise _TryLater
            self._counters["calls"] += 1
            code = await client.log(entries)
            done = True
            if code is not ResultCode.OK:
                raise _TryLater
        finally:
            if not done:
                # Failed or cancelled mid-call: the connection's state is unknown.
                await self._disconnect()

    async def _send(self, pid: PartitionId, entries: list[LogEntry]) -> None:
        size = sum(len(e.category) + len(e.message) for e in entries)
        backoff = Backoff(self._config.backoff_initial_s, self._config.backoff_max_s, self._rng)
        peer = f"{self._config.host}:{self._config.port}"
        async with self._lock:
            started = trio.current_time()
            while True:
                if self._closed:
                    raise SinkError("forward", pid, "sink is closed")
                try:
                    await self._call(entries, size)
                except _TryLater:
                    self._counters["try later"] += 1
                    reason = "upstream answered TRY_LATER"
                except ClientError as exc:
                    reason = f"upstream failed: {exc}"
                else:
                    self._counters["sent"] += len(entries)
                    return
                self._counters["failed calls"] += 1
                if (
                    self._config.max_attempts is not None
                    and backoff.attempts + 1 >= self._config.max_attempts
                ):
                    raise SinkError("forward", pid, reason)
                delay = backoff.next_delay()
                if self._give_up_after_s is not None:
                    left = started + self._give_up_after_s - trio.current_time()
                    if left <= 0:
                        raise SinkError(
                            "forward",
                            pid,
                            f"gave up after {backoff.attempts} attempts in "
                            f"{self._give_up_after_s:g} s; the last: {reason}",
                        )
                    delay = min(delay, left)  # one last attempt at the limit
                log.warning(
                    "forward retry",
                    extra={
                        "peer": peer,
                        "partition": str(pid),
                        "entries": len(entries),
                        "reason": reason,
                        "attempt": backoff.attempts,
                        "delay_s": round(delay, 3),
                    },
                )
                await trio.sleep(delay)
