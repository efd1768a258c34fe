"""The sd_notify protocol (``pipeline.notify``) against a real AF_UNIX datagram socket, in its
filesystem and abstract forms, and the reload's notifications (``pipeline.reload``)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
from notify_socket import bound_notify_socket

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.notify import (
    RELOADING_STATUS,
    STOPPING_STATUS,
    Notifier,
    NotifyTarget,
    monotonic_usec,
    target_from_environment,
)
from pipeline.reload import Reloader


class Receiver:
    """The service manager's end: a bound datagram socket and the address to give the daemon."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def receive(self, timeout: float = 5.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        datagram = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in datagram.split("\n"))

    def nothing_waiting(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        return False

    def all_waiting(self) -> list[dict[str, str]]:
        received = []
        while not self.nothing_waiting():
            received.append(self.receive())
        return received

    def notifier(self) -> Notifier:
        return Notifier.from_environment({"NOTIFY_SOCKET": self.address})


def bind_receiver(form: str) -> Iterator[Receiver]:
    with bound_notify_socket(form) as (sock, address):
        yield Receiver(sock, address)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    yield from bind_receiver(request.param)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    yield from bind_receiver("abstract")


# -- the environment ---------------------------------------------------------------------------


def test_no_notify_socket_means_no_target_and_no_socket() -> None:
    assert target_from_environment({}, 1) is None
    assert target_from_environment({"NOTIFY_SOCKET": ""}, 1) is None
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    notifier.ready("listening on 127.0.0.1:1463")
    notifier.reloading()
    notifier.stopping()  # nothing to send to, nothing raised


def test_path_and_abstract_addresses() -> None:
    path = target_from_environment({"NOTIFY_SOCKET": "/run/systemd/notify"}, 1)
    assert path == NotifyTarget("/run/systemd/notify", "/run/systemd/notify", None)
    abstract = target_from_environment({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"}, 1)
    assert abstract is not None
    assert abstract.sockaddr == "\0/org/freedesktop/systemd1/notify"


def test_an_address_of_another_family_is_refused_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.notify"):
        assert target_from_environment({"NOTIFY_SOCKET": "vsock:2:1234"}, 1) is None
    assert "only AF_UNIX sockets are supported" in caplog.text


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_of_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    target = target_from_environment({"NOTIFY_SOCKET": "/run/notify", **environ}, 42)
    assert target is not None
    assert target.watchdog_interval_s == interval


# -- what is sent ----------------------------------------------------------------------------


def test_ready_reload_and_stop(receiver: Receiver) -> None:
    with receiver.notifier() as notifier:
        notifier.reloading()  # before READY: systemd would take the reload's READY for the start's
        assert receiver.nothing_waiting()
        notifier.ready("listening on 127.0.0.1:1463")
        assert receiver.receive() == {"READY": "1", "STATUS": "listening on 127.0.0.1:1463"}
        before = monotonic_usec()
        notifier.reloading()
        reloading = receiver.receive()
        assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC", "STATUS"}
        assert reloading["RELOADING"] == "1"
        assert reloading["STATUS"] == RELOADING_STATUS
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        notifier.reloaded()
        assert receiver.receive() == {"READY": "1", "STATUS": "listening on 127.0.0.1:1463"}
        notifier.stopping()
        assert receiver.receive() == {"STOPPING": "1", "STATUS": STOPPING_STATUS}
        # Once stopping, nothing but the watchdog: a second stop, a late reload or ready are quiet.
        notifier.stopping()
        notifier.reloading()
        notifier.reloaded()
        notifier.ready("again")
        assert receiver.nothing_waiting()


def test_monotonic_usec_is_the_clock_systemd_reads() -> None:
    assert abs(monotonic_usec() - time.monotonic_ns() // 1000) < 1_000_000


def test_status_follows_problems_and_is_sent_only_when_it_changes(
    abstract_receiver: Receiver,
) -> None:
    problems: list[str] = []
    with abstract_receiver.notifier() as notifier:
        notifier.ready("listening on 127.0.0.1:1463", lambda: list(problems))
        abstract_receiver.receive()
        notifier.refresh_status()
        assert abstract_receiver.nothing_waiting()
        problems.append("journal writer failed: app/0: [Errno 5] EIO\nsecond line")
        notifier.refresh_status()
        assert abstract_receiver.receive() == {
            "STATUS": "WARNING - journal writer failed: app/0: [Errno 5] EIO second line"
        }
        notifier.refresh_status()
        assert abstract_receiver.nothing_waiting()
        problems.clear()
        notifier.refresh_status()
        assert abstract_receiver.receive() == {"STATUS": "listening on 127.0.0.1:1463"}


async def test_follow_status_sends_a_change_within_its_interval(
    abstract_receiver: Receiver, autojump_clock: trio.testing.MockClock
) -> None:
    problems: list[str] = []
    with abstract_receiver.notifier() as notifier:
        notifier.ready("up", lambda: list(problems))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.follow_status, 1.0)
            await trio.sleep(2.5)
            problems.append("partition app/0 damaged at 4096")
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    received = abstract_receiver.all_waiting()
    assert received == [
        {"READY": "1", "STATUS": "up"},
        {"STATUS": "WARNING - partition app/0 damaged at 4096"},
    ]


async def test_watchdog_pings_at_half_the_timeout(
    abstract_receiver: Receiver, autojump_clock: trio.testing.MockClock
) -> None:
    environ = {"NOTIFY_SOCKET": abstract_receiver.address, "WATCHDOG_USEC": "2000000"}
    with Notifier.from_environment(environ) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.serve_watchdog)
            await trio.sleep(4.5)  # pings at 0, 1, 2, 3 and 4 s
            nursery.cancel_scope.cancel()
    assert abstract_receiver.all_waiting() == [{"WATCHDOG": "1"}] * 5


async def test_no_watchdog_unless_asked(abstract_receiver: Receiver) -> None:
    with abstract_receiver.notifier() as notifier:
        with trio.fail_after(1):
            await notifier.serve_watchdog()  # returns at once
    assert abstract_receiver.nothing_waiting()


def test_a_socket_that_is_not_there_is_logged_once_and_never_raises(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.notify"),
        Notifier.from_environment(environ) as notifier,
    ):
        notifier.ready("listening")
        notifier.refresh_status()
        notifier.stopping()
    failures = [r for r in caplog.records if "notification failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].__dict__["notify_socket"] == str(tmp_path / "nobody-listens")


def test_a_full_queue_drops_the_notification_instead_of_waiting(
    abstract_receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Nobody reads: the socket's queue fills, and every send still returns at once.
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.notify"),
        abstract_receiver.notifier() as notifier,
    ):
        notifier.ready("up", lambda: [])
        started = time.monotonic()
        for _ in range(10_000):
            notifier.reloading()
        assert time.monotonic() - started < 5.0
    failures = [r for r in caplog.records if "notification failed" in r.getMessage()]
    assert [r.__dict__["error"] for r in failures] == ["Resource temporarily unavailable"]


# -- a reload -------------------------------------------------------------------------------


async def test_a_reload_is_announced_and_a_failed_one_shows_as_warning(
    abstract_receiver: Receiver, tmp_path: Path
) -> None:
    outcome: list[Exception] = []

    def load(path: Path) -> PipelineConfig:
        if outcome:
            raise outcome[0]
        return cast(PipelineConfig, object())  # apply() below ignores it

    with abstract_receiver.notifier() as notifier:
        reloader = Reloader(tmp_path / "pipeline.toml", load, lambda new: None, notifier)
        notifier.ready("listening on 127.0.0.1:1463", reloader.problems)
        abstract_receiver.receive()
        await reloader.reload("SIGHUP")
        assert abstract_receiver.receive().keys() == {"RELOADING", "MONOTONIC_USEC", "STATUS"}
        assert abstract_receiver.receive() == {
            "READY": "1",
            "STATUS": "listening on 127.0.0.1:1463",
        }
        outcome.append(ConfigError("server.port", "must be at most 65535"))
        await reloader.reload("SIGHUP")
        assert abstract_receiver.receive()["RELOADING"] == "1"
        assert abstract_receiver.receive() == {
            "READY": "1",
            "STATUS": "WARNING - reload failed: configuration key 'server.port': "
            "must be at most 65535",
        }
