"""The shared Cassandra session: opened on first use, retried at a bounded rate while down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from consumers.cassandra import CassandraConfig
from consumers.errors import CassandraUnavailable
from pipeline import storage
from pipeline.storage import RECONNECT_INTERVAL_S, open_storage


async def test_a_failed_connect_is_retried_only_after_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[int] = []
    up = False

    @asynccontextmanager
    async def fake_open(config: CassandraConfig) -> AsyncIterator[Any]:
        attempts.append(1)
        if not up:
            raise CassandraUnavailable(config.hosts, config.port, 1.0, "refused")
        yield "session"

    monkeypatch.setattr(storage, "open_cassandra", fake_open)
    now = [100.0]
    async with open_storage(CassandraConfig(), clock=lambda: now[0]) as shared:
        for _ in range(3):
            with pytest.raises(CassandraUnavailable, match="refused"):
                await shared.session()
        assert len(attempts) == 1  # every partition's retry within the interval: no new attempt
        now[0] += RECONNECT_INTERVAL_S
        up = True
        assert await shared.session() == "session"
        assert await shared.session() == "session"
        assert len(attempts) == 2
