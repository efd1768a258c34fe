"""Real daemons under a stand-in for systemd: a datagram socket in ``NOTIFY_SOCKET`` (a path or an
abstract name) hears READY=1 once the port answers, STATUS lines, RELOADING=1 and READY=1 around
a SIGHUP, STOPPING=1 at SIGTERM, and WATCHDOG=1 pings when WATCHDOG_USEC is set; a socket
nobody listens on changes nothing but one log line."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_socket import bound_notify_socket

from scribe_compat import LogEntry, ResultCode, ScribeClient

from .conftest import pipeline_command

pytestmark = pytest.mark.timeout(90)

READY_STATUS = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class ServiceManager:
    """The service manager's end of the protocol: the socket a daemon's notifications reach."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.watchdog_pings = 0

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        """The next notification other than a watchdog ping (those are counted)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            datagram = self.sock.recv(4096).decode()
            fields = dict(line.split("=", 1) for line in datagram.split("\n"))
            if fields == {"WATCHDOG": "1"}:
                self.watchdog_pings += 1
                continue
            return fields


def bind(form: str) -> Iterator[ServiceManager]:
    with bound_notify_socket(form) as (sock, address):
        yield ServiceManager(sock, address)


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest) -> Iterator[ServiceManager]:
    yield from bind(request.param)


@pytest.fixture
def path_manager() -> Iterator[ServiceManager]:
    yield from bind("path")


class Daemon:
    """One ``pipeline`` daemon started as systemd would, its log in a file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        environ.update(env)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=environ
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        daemon.kill()


def start(
    daemons: list[Daemon], tmp_path: Path, args: list[str | Path], env: dict[str, str]
) -> Daemon:
    daemon = Daemon(pipeline_command(*args), tmp_path / f"daemon{len(daemons)}.log", env)
    daemons.append(daemon)
    return daemon


def server_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[journal]\ndir = "{tmp_path / "journal"}"\n'
        f"{extra}"
    )
    return config


def files_group(tmp_path: Path, settings: str = "") -> str:
    """Group ``archive``, every category into files; ``settings`` are more of the group's keys."""
    return (
        f'[coordination]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[consumers]]\nname = "archive"\ncategories = ["*"]\nsink = "files"\n'
        f'{settings}[consumers.files]\nfile_path = "{tmp_path / "files"}"\n'
    )


def test_serve_ready_reload_and_stop(
    tmp_path: Path, manager: ServiceManager, started: list[Daemon]
) -> None:
    config = server_config(tmp_path)
    daemon = start(
        started, tmp_path, ["serve", "--config", config], {"NOTIFY_SOCKET": manager.address}
    )

    ready = manager.next()
    assert ready.keys() == {"READY", "STATUS"}, ready
    match = READY_STATUS.fullmatch(ready["STATUS"])
    assert match is not None, ready
    # READY=1 means the port answers and the journal takes events, at this very moment.
    with ScribeClient.connect("127.0.0.1", int(match.group(1)), 10.0) as client:
        assert client.log([LogEntry(b"app", b"one")]) == ResultCode.OK

    daemon.signal(signal.SIGHUP)
    reloading = manager.next()
    assert reloading["RELOADING"] == "1"
    assert reloading["STATUS"] == "reloading the configuration"
    # The same clock as systemd's: CLOCK_MONOTONIC, in microseconds, a moment ago.
    assert 0 <= time.monotonic_ns() // 1000 - int(reloading["MONOTONIC_USEC"]) < 20_000_000
    assert manager.next() == ready

    config.write_text("[server]\nport = 70000\n")
    daemon.signal(signal.SIGHUP)
    assert manager.next()["RELOADING"] == "1"
    warning = manager.next()
    assert warning["READY"] == "1"
    assert warning["STATUS"].startswith("WARNING - reload failed: configuration key 'server.port'")

    daemon.signal(signal.SIGTERM)
    assert manager.next() == {"STOPPING": "1", "STATUS": "stopping: draining"}
    assert daemon.wait() == 0
    assert manager.watchdog_pings == 0  # no WATCHDOG_USEC, no pings


def test_run_is_ready_once_its_groups_have_joined(
    tmp_path: Path, path_manager: ServiceManager, started: list[Daemon]
) -> None:
    config = server_config(tmp_path, files_group(tmp_path))
    daemon = start(
        started, tmp_path, ["run", "--config", config], {"NOTIFY_SOCKET": path_manager.address}
    )
    ready = path_manager.next()
    assert ready["READY"] == "1"
    assert re.fullmatch(r"listening on 127\.0\.0\.1:\d+; consumer group archive", ready["STATUS"])
    assert "consumer started" in daemon.log()  # said before READY, never after
    daemon.signal(signal.SIGTERM)
    assert path_manager.next()["STOPPING"] == "1"
    assert daemon.wait() == 0


def test_consume_is_ready_once_its_member_has_joined(
    tmp_path: Path, path_manager: ServiceManager, started: list[Daemon]
) -> None:
    (tmp_path / "journal").mkdir()
    config = server_config(tmp_path, files_group(tmp_path))
    args: list[str | Path] = ["consume", "--config", config, "--group", "archive"]
    member = start(started, tmp_path, args, {"NOTIFY_SOCKET": path_manager.address})
    assert path_manager.next() == {"READY": "1", "STATUS": "consumer group archive"}
    assert "consumer started" in member.log()
    member.signal(signal.SIGTERM)
    assert path_manager.next() == {"STOPPING": "1", "STATUS": "stopping: draining"}
    assert member.wait() == 0


def test_watchdog_pings_at_half_the_timeout_for_its_own_pid(
    tmp_path: Path, path_manager: ServiceManager, started: list[Daemon]
) -> None:
    config = server_config(tmp_path)
    # systemd names the process the watchdog is for: the shell's pid is the daemon's after exec.
    command = " ".join(shlex.quote(arg) for arg in pipeline_command("serve", "--config", config))
    env = {"NOTIFY_SOCKET": path_manager.address, "WATCHDOG_USEC": "400000"}
    daemon = Daemon(["sh", "-c", f"WATCHDOG_PID=$$ exec {command}"], tmp_path / "daemon.log", env)
    started.append(daemon)
    assert path_manager.next()["READY"] == "1"
    path_manager.sock.settimeout(5.0)
    for _ in range(5):  # every 0.2 s
        assert path_manager.sock.recv(4096) == b"WATCHDOG=1"
    daemon.signal(signal.SIGTERM)
    assert path_manager.next()["STOPPING"] == "1"
    assert daemon.wait() == 0


def test_a_notify_socket_nobody_listens_on_changes_nothing_but_a_log_line(
    tmp_path: Path, started: list[Daemon]
) -> None:
    config = server_config(tmp_path)
    nowhere = str(tmp_path / "no-such-socket")
    daemon = start(started, tmp_path, ["serve", "--config", config], {"NOTIFY_SOCKET": nowhere})
    deadline = time.monotonic() + 20
    while not (match := re.search(r"msg=listening .*?port=(\d+)", daemon.log())):
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.02)
    with ScribeClient.connect("127.0.0.1", int(match.group(1)), 10.0) as client:
        assert client.log([LogEntry(b"app", b"one")]) == ResultCode.OK
        daemon.signal(signal.SIGHUP)  # a reload's two notifications fail too
        deadline = time.monotonic() + 20
        while "configuration reloaded" not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.02)
        assert client.log([LogEntry(b"app", b"two")]) == ResultCode.OK
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert daemon.log().count("systemd notification failed") == 1
    assert f"notify_socket={nowhere}" in daemon.log()


def test_a_damaged_partition_makes_the_members_status_a_warning(
    tmp_path: Path, path_manager: ServiceManager, started: list[Daemon]
) -> None:
    # Retries of the damaged read back off quickly, so the test need not wait long.
    retries = "batch_wait_s = 0.01\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.3\n"
    route = '[[routing.routes]]\ncategory = "default"\npartitions = 1\n'
    group = files_group(tmp_path, retries) + route
    config = server_config(tmp_path, group)
    env = {"NOTIFY_SOCKET": path_manager.address}
    server = start(started, tmp_path, ["serve", "--config", config], env)
    match = READY_STATUS.fullmatch(path_manager.next()["STATUS"])
    assert match is not None
    with ScribeClient.connect("127.0.0.1", int(match.group(1)), 10.0) as client:
        for call in range(11):
            entries = [LogEntry(b"dmg", b"m%03d" % (call * 10 + k)) for k in range(10)]
            assert client.log(entries) == ResultCode.OK
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    path_manager.next()  # its STOPPING=1
    # A byte in the middle of the segment: the partition opens as clean; its reader meets it.
    segment = tmp_path / "journal" / "dmg" / "0" / f"{0:020d}.log"
    data = bytearray(segment.read_bytes())
    data[500] ^= 0xFF
    segment.write_bytes(bytes(data))

    member = start(started, tmp_path, ["consume", "--config", config, "--group", "archive"], env)
    assert path_manager.next() == {"READY": "1", "STATUS": "consumer group archive"}
    warning = path_manager.next()
    assert warning.keys() == {"STATUS"}
    assert warning["STATUS"].startswith("WARNING - journal partition dmg/0 damaged at offset ")
    member.signal(signal.SIGTERM)
    assert path_manager.next() == {"STOPPING": "1", "STATUS": "stopping: draining"}
    assert member.wait() == 0
