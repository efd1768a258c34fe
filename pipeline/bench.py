"""The ingest load generator: many connections sending pre-encoded ``Log`` batches.

Each connection encodes its request once (``prepare_log``) and resends the same bytes, so the
generator spends its time on the socket, not on encoding, and can saturate a server running on
the same machine.  With ``rate`` set, calls are paced to measure latency below saturation.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import trio

from scribe_compat import (
    AsyncScribeClient,
    LogEntry,
    ResultCode,
    ServerConnection,
    prepare_log,
)


@dataclass(frozen=True)
class IngestSettings:
    host: str = "127.0.0.1"
    port: int = 1463
    connections: int = 4
    batch: int = 1000
    message_bytes: int = 200
    duration_s: float = 10.0
    warmup_s: float = 1.0
    # Messages per second over all connections; 0 sends as fast as replies come back.
    rate: float = 0.0
    categories: int = 1
    # The category written: this name, or with several, the name and 0, 1, ... after it.
    category: str = "bench"

    def category_names(self) -> list[str]:
        if self.categories == 1:
            return [self.category]
        return [f"{self.category}{i}" for i in range(self.categories)]


@dataclass
class IngestResult:
    settings: IngestSettings
    seconds: float = 0.0
    messages: int = 0
    calls: int = 0
    try_later: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.messages_per_s * self.settings.message_bytes / 1e6

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        return {
            "connections": self.settings.connections,
            "batch": self.settings.batch,
            "message_bytes": self.settings.message_bytes,
            "target_rate": self.settings.rate,
            "seconds": round(self.seconds, 3),
            "messages": self.messages,
            "calls": self.calls,
            "try_later": self.try_later,
            "msgs_per_s": round(self.messages_per_s),
            "mb_per_s": round(self.mb_per_s, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.latencies_ms, default=0.0), 2),
        }


def make_entries(settings: IngestSettings, connection: int) -> list[LogEntry]:
    names = settings.category_names()
    category = names[connection % len(names)].encode("utf-8", "surrogateescape")
    body = os.urandom(settings.message_bytes // 2 + 1).hex().encode()[: settings.message_bytes]
    return [LogEntry(category=category, message=body) for _ in range(settings.batch)]


async def run_ingest(
    settings: IngestSettings, progress: Callable[[IngestResult], None] | None = None
) -> IngestResult:
    """Drive the server for warmup + duration seconds; count only after the warmup."""
    result = IngestResult(settings)
    clock = time.perf_counter
    start = clock()
    measure_from = start + settings.warmup_s
    stop_at = measure_from + settings.duration_s
    interval = settings.connections * settings.batch / settings.rate if settings.rate else 0.0

    async def connection(index: int) -> None:
        prepared = prepare_log(make_entries(settings, index), framed=True, strict=False)
        async with await AsyncScribeClient.connect(settings.host, settings.port) as client:
            next_send = clock() + interval * index / settings.connections
            while (now := clock()) < stop_at:
                if interval:
                    if next_send > now:
                        await trio.sleep(next_send - now)
                    next_send += interval
                sent = clock()
                code = await client.log_prepared(prepared)
                done = clock()
                if sent < measure_from:
                    continue
                result.calls += 1
                result.latencies_ms.append((done - sent) * 1000)
                if code == ResultCode.OK:
                    result.messages += settings.batch
                else:
                    result.try_later += 1

    senders = [functools.partial(connection, index) for index in range(settings.connections)]
    return await drive(senders, result, measure_from, settings.duration_s, progress, clock)


class Measured(Protocol):
    seconds: float


M = TypeVar("M", bound=Measured)


async def drive(
    senders: Iterable[Callable[[], Awaitable[object]]],
    result: M,
    measure_from: float,
    duration_s: float,
    progress: Callable[[M], None] | None,
    clock: Callable[[], float] = time.perf_counter,
) -> M:
    """Run every sender to its end, reporting ``result`` to ``progress`` once a second after
    the warm-up; ``result.seconds`` ends as the measured time."""

    async def report() -> None:
        while True:
            await trio.sleep(1)
            result.seconds = max(0.0, clock() - measure_from)
            if progress is not None and result.seconds > 0:
                progress(result)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        async with trio.open_nursery() as running:
            for sender in senders:
                running.start_soon(sender)
        nursery.cancel_scope.cancel()
    result.seconds = min(duration_s, clock() - measure_from)
    return result


def decode_rate(
    batch: int = 1000, message_bytes: int = 200, seconds: float = 2.0, *, framed: bool = True
) -> float:
    """Entries per second that the server's codec decodes from ``Log`` calls."""
    settings = IngestSettings(batch=batch, message_bytes=message_bytes)
    request = prepare_log(make_entries(settings, 0), framed=framed, strict=not framed).request
    copies = 50
    data = request * copies
    entries = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn = ServerConnection()
        conn.receive_data(data)
        for _ in range(copies):
            event = conn.next_event()
            entries += len(event.log_batch)  # type: ignore[union-attr]
    return entries / (time.perf_counter() - start)
