"""fb303 management calls from any client, against a real ``pipeline serve`` process: options
stay bounded, and shutdown/reinitialize obey ``server.allow_remote_shutdown``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from pipeline.log_service import (
    OPTIONS_REFUSED,
    REINITIALIZE_REFUSED,
    SHUTDOWN_REFUSED,
    Fb303Config,
    LogService,
    remote_shutdown_allowed,
)
from scribe_compat import FbStatus, LogEntry, ResultCode, ServerConfig

from .conftest import ServerFactory, write_config

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


def test_set_option_keeps_memory_bounded(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    defaults = Fb303Config()
    with server.client() as client:
        client.get_counters()  # warm up: the first calls allocate what every call reuses
        before = server.rss_bytes()
        for i in range(150):  # the attack as reported: unique keys, 1 MiB values
            client.set_option(f"key{i}", "v" * MiB)
        for i in range(200):  # and many small ones
            client.set_option(f"small{i}", "x" * 100)
        grown = server.rss_bytes() - before
        options = client.get_options()
        counters = client.get_counters()
        assert client.get_status() == FbStatus.ALIVE
    assert len(options) == defaults.max_options
    assert all(len(k) + len(v) <= defaults.max_option_bytes for k, v in options.items())
    assert counters[OPTIONS_REFUSED] == 150 + 200 - defaults.max_options
    # Was 150 MiB: each refused value is dropped with its call.
    assert grown < 48 * MiB, grown
    assert "setOption refused" in server.log()


def test_options_can_be_replaced_and_removed_within_the_bound(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "p.toml", "[fb303]\nmax_options = 2\nmax_option_bytes = 10\n")
    server = pipeline_server(config=config).start()
    with server.client() as client:
        client.set_option("a", "1")
        client.set_option("b", "2")
        client.set_option("c", "3")  # a third key: refused
        client.set_option("a", "12345678901")  # too long: refused, the old value stays
        client.set_option("b", "22")  # replacing an existing key needs no new slot
        assert client.get_options() == {"a": "1", "b": "22"}
        client.set_option("a", "")  # an empty value removes the option, freeing its slot
        client.set_option("c", "3")
        assert client.get_options() == {"b": "22", "c": "3"}
        assert client.get_counter(OPTIONS_REFUSED) == 2


def test_shutdown_and_reinitialize_refused_when_the_setting_is_off(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "p.toml", "[server]\nallow_remote_shutdown = false\n")
    server = pipeline_server(config=config).start()
    with server.client() as client:
        for _ in range(3):
            client.shutdown()  # oneway: no answer either way
            client.reinitialize()
        counters = client.get_counters()  # answered after the oneway calls were handled
        assert counters[SHUTDOWN_REFUSED] == 3
        assert counters[REINITIALIZE_REFUSED] == 3
    time.sleep(0.3)
    assert server.running()
    with server.client() as client:
        assert client.log([LogEntry(category=b"c", message=b"still serving")]) == ResultCode.OK
        assert client.get_status() == FbStatus.ALIVE
    assert "fb303 call refused" in server.log()
    assert "shutdown requested" not in server.log()


def test_shutdown_is_obeyed_by_default_on_loopback(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()  # 127.0.0.1, the setting unset
    with server.client() as client:
        client.shutdown()
    assert server.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("host", "setting", "allowed"),
    [
        ("127.0.0.1", None, True),
        ("127.0.0.2", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("0.0.0.0", None, False),
        ("::", None, False),
        ("", None, False),
        ("10.1.2.3", None, False),
        ("logs.example.com", None, False),
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_the_default_allows_remote_shutdown_only_on_loopback(
    host: str, setting: bool | None, allowed: bool
) -> None:
    server = ServerConfig(host=host, allow_remote_shutdown=setting)
    assert remote_shutdown_allowed(server) is allowed


async def test_a_refused_shutdown_does_not_stop_the_service() -> None:
    stops: list[bool] = []
    reloads: list[bool] = []

    async def reload() -> None:
        reloads.append(True)

    service = LogService(
        name="t",
        journal=None,  # type: ignore[arg-type]  # shutdown and reinitialize never reach it
        router=None,  # type: ignore[arg-type]
        admission=None,  # type: ignore[arg-type]
        reload=reload,
        request_stop=lambda: stops.append(True),
        allow_remote_shutdown=False,
    )
    await service.shutdown()
    await service.reinitialize()
    await trio.lowlevel.checkpoint()
    assert stops == [] and reloads == []
    service.allow_remote_shutdown = True
    await service.shutdown()
    await service.reinitialize()
    assert stops == [True] and reloads == [True]
