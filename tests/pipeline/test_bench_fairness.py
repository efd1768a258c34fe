"""``pipeline bench fairness``: the hand-encoded large calls, and a short run."""

from __future__ import annotations

import pytest
import trio

from pipeline.bench_fairness import FairnessSettings, LargeKind, large_log_request, run_fairness
from scribe_compat import (
    Call,
    LogBatch,
    ResultCode,
    ScribeServer,
    ServerConfig,
    ServerConnection,
    serve_scribe,
)


@pytest.mark.parametrize("kind", list(LargeKind), ids=lambda k: k.value)
def test_large_calls_decode_to_the_entries_they_stand_for(kind: LargeKind) -> None:
    request = large_log_request(kind, 500, 100_000, b"cat")
    assert len(request) - 4 <= 100_000
    conn = ServerConnection()
    conn.receive_data(request)
    call = conn.next_event()
    assert isinstance(call, Call) and call.name == "Log"
    batch = call.log_batch
    assert len(batch) == 500 and set(batch.categories) == {b"cat"}
    assert len(set(batch.messages)) == 1 and len(batch.messages[0]) > 50
    if kind is LargeKind.METADATA:
        assert batch.metadata is not None and len(batch.metadata[0] or {}) == 4
    else:
        assert batch.metadata is None


def test_too_small_a_call_for_its_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        large_log_request(LargeKind.METADATA, 1000, 10_000, b"cat")


class CountingHandler:
    """Just enough of a ScribeHandler for the benchmark: counts Log entries."""

    def __init__(self) -> None:
        self.entries = 0

    async def log(self, batch: LogBatch) -> ResultCode:
        self.entries += len(batch)
        return ResultCode.OK


async def test_a_short_run_reports_probe_and_large_calls(nursery: trio.Nursery) -> None:
    handler = CountingHandler()
    server: ScribeServer = await nursery.start(
        serve_scribe,
        handler,  # only Log is called: a Protocol checks no more at run time
        ServerConfig(host="127.0.0.1", port=0),
    )
    settings = FairnessSettings(
        port=server.address[1],
        large_connections=2,
        large_entries=1000,
        large_bytes=200_000,
        duration_s=0.5,
        warmup_s=0.1,
    )
    summary = (await run_fairness(settings)).summary()
    assert summary["probe_calls"] and summary["large_calls"]
    assert summary["probe_try_later"] == summary["large_try_later"] == 0
    assert 0 < summary["probe_p50_ms"] <= summary["probe_p99_ms"] <= summary["probe_max_ms"]  # type: ignore[operator]
    assert handler.entries >= 1000
