"""The fairness benchmark: how long a one-message ``Log`` waits while large calls flow.

Several connections resend one large ``Log`` call (by default 100,000 entries in a frame of
nearly 16 MiB, the server's default limit) as fast as replies come back; one more connection,
the probe, sends a one-message ``Log`` at a steady pace and records how long each took.  A server
that decodes large calls on its event loop makes the probe wait for every one of them.

The large calls are encoded by hand (every entry identical, so the request is one entry's bytes
repeated) because one shape, entries with fields the server's IDL does not know, cannot be
written with the IDL's own classes.
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from pipeline.bench import drive
from scribe_compat import AsyncScribeClient, LogEntry, PreparedLog, ResultCode, prepare_log

MiB = 1 << 20
_T_STOP = b"\x00"
_T_I64 = 10
_T_STRING = 11
_T_STRUCT = 12
_T_MAP = 13
_T_LIST = 15
_I32 = struct.Struct(">i")


class LargeKind(enum.Enum):
    """The shape of each entry of the large calls."""

    # Category and message only: the codec's fast path.
    PLAIN = "plain"
    # A metadata map (field 3) of four pairs per entry: the general decoder, many small values.
    METADATA = "metadata"
    # Two fields the IDL does not know (an i64 and a string): walked, then skipped.
    UNKNOWN_FIELDS = "unknown-fields"


@dataclass(frozen=True)
class FairnessSettings:
    host: str = "127.0.0.1"
    port: int = 1463
    large_connections: int = 4
    kind: LargeKind = LargeKind.METADATA
    large_entries: int = 100_000
    # Frame payload of each large call: just under the server's default 16 MiB frame limit.
    large_bytes: int = 16 * MiB - 64 * 1024
    # One probe call every this many seconds.
    probe_interval_s: float = 0.01
    duration_s: float = 10.0
    warmup_s: float = 1.0
    category: str = "fairness"


@dataclass
class FairnessResult:
    settings: FairnessSettings
    seconds: float = 0.0
    probe_latencies_ms: list[float] = field(default_factory=list)
    probe_try_later: int = 0
    large_latencies_ms: list[float] = field(default_factory=list)
    large_try_later: int = 0

    def summary(self) -> dict[str, object]:
        settings = self.settings
        large_calls = len(self.large_latencies_ms)
        ok_calls = large_calls - self.large_try_later
        seconds = self.seconds or 1.0
        return {
            "kind": settings.kind.value,
            "large_connections": settings.large_connections,
            "large_entries": settings.large_entries,
            "large_bytes": settings.large_bytes,
            "seconds": round(self.seconds, 3),
            "probe_calls": len(self.probe_latencies_ms),
            "probe_try_later": self.probe_try_later,
            "probe_p50_ms": round(_percentile(self.probe_latencies_ms, 50), 2),
            "probe_p99_ms": round(_percentile(self.probe_latencies_ms, 99), 2),
            "probe_max_ms": round(max(self.probe_latencies_ms, default=0.0), 2),
            "large_calls": large_calls,
            "large_try_later": self.large_try_later,
            "large_p50_ms": round(_percentile(self.large_latencies_ms, 50), 1),
            "large_max_ms": round(max(self.large_latencies_ms, default=0.0), 1),
            "large_msgs_per_s": round(ok_calls * settings.large_entries / seconds),
            "large_mb_per_s": round(ok_calls * settings.large_bytes / seconds / 1e6, 1),
        }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _string(fid: int, value: bytes) -> bytes:
    return struct.pack(">bh", _T_STRING, fid) + _I32.pack(len(value)) + value


def _entry(kind: LargeKind, category: bytes, message: bytes) -> bytes:
    fields = _string(1, category) + _string(2, message)
    if kind is LargeKind.METADATA:
        pairs = [(b"k%03d" % i, b"value%03d" % i) for i in range(4)]
        fields += struct.pack(">bhbbi", _T_MAP, 3, _T_STRING, _T_STRING, len(pairs))
        for key, value in pairs:
            fields += _I32.pack(len(key)) + key + _I32.pack(len(value)) + value
    elif kind is LargeKind.UNKNOWN_FIELDS:
        fields += struct.pack(">bhq", _T_I64, 40, 1463) + _string(41, b"newer-client")
    return fields + _T_STOP


def large_log_request(kind: LargeKind, entries: int, payload_bytes: int, category: bytes) -> bytes:
    """A framed, non-strict ``Log`` call of ``entries`` identical entries, whose frame payload
    is at most ``payload_bytes``, with each message as long as that allows."""
    header = _I32.pack(3) + b"Log" + b"\x01" + _I32.pack(0)
    list_header = struct.pack(">bhbi", _T_LIST, 1, _T_STRUCT, entries)
    fixed = len(header) + len(list_header) + 1  # the args struct's STOP
    per_entry = (payload_bytes - fixed) // entries
    message_bytes = per_entry - len(_entry(kind, category, b""))
    if message_bytes < 1:
        raise ValueError(f"{payload_bytes} bytes cannot hold {entries} {kind.value} entries")
    entry = _entry(kind, category, b"m" * message_bytes)
    payload = header + list_header + entry * entries + _T_STOP
    return _I32.pack(len(payload)) + payload


async def run_fairness(
    settings: FairnessSettings, progress: Callable[[FairnessResult], None] | None = None
) -> FairnessResult:
    """Large calls on ``large_connections`` connections and a paced probe on one more, for
    warmup + duration seconds; only calls sent after the warmup count."""
    result = FairnessResult(settings)
    clock = time.perf_counter
    measure_from = clock() + settings.warmup_s
    stop_at = measure_from + settings.duration_s
    category = settings.category.encode()
    large = PreparedLog(
        large_log_request(settings.kind, settings.large_entries, settings.large_bytes, category),
        seqid=0,
        framed=True,
        strict=False,
        entries=settings.large_entries,
    )
    probe = prepare_log([LogEntry(category=category + b"-probe", message=b"one message")])

    async def send_large() -> None:
        async with await AsyncScribeClient.connect(settings.host, settings.port) as client:
            while clock() < stop_at:
                sent = clock()
                code = await client.log_prepared(large)
                if sent >= measure_from:
                    result.large_latencies_ms.append((clock() - sent) * 1000)
                    result.large_try_later += code != ResultCode.OK

    async def send_probes() -> None:
        async with await AsyncScribeClient.connect(settings.host, settings.port) as client:
            next_send = clock()
            while (now := clock()) < stop_at:
                if next_send > now:
                    await trio.sleep(next_send - now)
                next_send += settings.probe_interval_s
                sent = clock()
                code = await client.log_prepared(probe)
                if sent >= measure_from:
                    result.probe_latencies_ms.append((clock() - sent) * 1000)
                    result.probe_try_later += code != ResultCode.OK

    senders = [send_large] * settings.large_connections + [send_probes]
    return await drive(senders, result, measure_from, settings.duration_s, progress, clock)
