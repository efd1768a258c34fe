"""Reloading a real process's configuration: SIGHUP reloads (``serve``, ``run``) or is ignored
(``consume``), never stops; ``pipeline ctl reload`` reports a configuration that does not load,
and fb303 says why until a reload succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.reload import RELOAD_FAILURES, RELOADS
from scribe_compat import FbStatus, LogEntry, ResultCode, ScribeClient

from .conftest import LISTENING, journal_messages, pipeline_command, run_pipeline

pytestmark = pytest.mark.timeout(90)


def routed_to(target: str, journal: Path, extra: str = "") -> str:
    """A configuration that journals category ``app`` as ``target``."""
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[journal]\ndir = "{journal}"\n'
        f'[[routing.routes]]\ncategory = "app"\ntarget = "{target}"\n{extra}'
    )


class Process:
    """One ``pipeline`` daemon with its log in a file."""

    def __init__(self, args: list[str | Path], log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                pipeline_command(*args), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{log}"
            assert time.monotonic() < deadline, log
            time.sleep(0.02)
        return log

    def port(self) -> int:
        self.wait_for_log("msg=listening")
        match = LISTENING.search(self.log_path.read_bytes())
        assert match is not None
        return int(match.group(1))

    def hangup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def make(*args: str | Path) -> Process:
        process = Process(list(args), tmp_path / f"process{len(started)}.log")
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("command", ["serve", "run"])
def test_sighup_reloads_and_keeps_serving(
    tmp_path: Path, start: Callable[..., Process], command: str
) -> None:
    journal = tmp_path / "journal"
    config = tmp_path / "pipeline.toml"
    config.write_text(routed_to("before", journal))
    daemon = start(command, "--config", config)
    with ScribeClient.connect("127.0.0.1", daemon.port(), 10.0) as client:
        assert client.log([LogEntry(b"app", b"one")]) == ResultCode.OK
        config.write_text(routed_to("after", journal))
        daemon.hangup()
        wait_until(lambda: client.get_counter(RELOADS) == 1)
        # The same connection goes on: nothing drained, nothing closed.
        assert client.log([LogEntry(b"app", b"two")]) == ResultCode.OK
        assert client.get_status() == FbStatus.ALIVE
    log = daemon.log()
    assert "SIGHUP received: reloading the configuration" in log
    assert 'msg="configuration reloaded" trigger=SIGHUP' in log
    assert "draining" not in log
    assert daemon.stop() == 0
    assert journal_messages(journal) == {b"before": [b"one"], b"after": [b"two"]}


def test_sighup_is_logged_and_ignored_by_a_consumer_member(
    tmp_path: Path, start: Callable[..., Process]
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[journal]\ndir = "{journal}"\n[coordination]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[consumers]]\nname = "archive"\ncategories = ["*"]\nsink = "files"\n'
        f'[consumers.files]\nfile_path = "{tmp_path / "files"}"\n'
    )
    member = start("consume", "--config", config, "--group", "archive")
    member.wait_for_log("consumer started")
    member.hangup()
    log = member.wait_for_log("SIGHUP ignored")
    assert "consumer member takes a new configuration on restart" in log
    time.sleep(0.2)
    assert member.proc.poll() is None
    assert member.stop() == 0


def test_ctl_reload_reports_a_broken_configuration_until_one_loads(
    tmp_path: Path, start: Callable[..., Process]
) -> None:
    journal = tmp_path / "journal"
    config = tmp_path / "pipeline.toml"
    config.write_text(routed_to("before", journal))
    server = start("serve", "--config", config)
    port = str(server.port())

    config.write_text(routed_to("after", journal, "[admission]\nmax_pending_bytes = -1\n"))
    done = run_pipeline("ctl", "reload", port)
    problem = "reload failed: configuration key 'admission.max_pending_bytes': must be >= "
    assert done.returncode == 1, done
    assert done.stderr.decode().startswith(problem), done.stderr
    with ScribeClient.connect("127.0.0.1", int(port), 10.0) as client:
        assert client.get_status() == FbStatus.WARNING
        assert client.get_status_details().startswith(problem)
        assert client.get_counter(RELOAD_FAILURES) == 1
        # The running configuration stays: app still goes to "before".
        assert client.log([LogEntry(b"app", b"kept")]) == ResultCode.OK
    status = run_pipeline("ctl", "status", port)
    assert status.returncode == 3 and problem.encode() in status.stdout
    log = server.log()
    assert "key=admission.max_pending_bytes" in log and "problem=" in log
    assert "Traceback" not in log and "exc=" not in log

    config.write_text(routed_to("after", journal))
    done = run_pipeline("ctl", "reload", port)
    assert done.returncode == 0, done
    assert done.stderr == b""
    status = run_pipeline("ctl", "status", port)
    assert status.returncode == 2 and status.stdout == b"ALIVE\n"
    assert server.stop() == 0
    assert journal_messages(journal) == {b"before": [b"kept"]}


def test_ctl_reload_says_when_the_server_refuses_it(
    tmp_path: Path, start: Callable[..., Process]
) -> None:
    config = tmp_path / "pipeline.toml"
    journal = tmp_path / "journal"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\nallow_remote_shutdown = false\n'
        f'[journal]\ndir = "{journal}"\n'
    )
    server = start("serve", "--config", config)
    done = run_pipeline("ctl", "reload", str(server.port()))
    assert done.returncode == 1, done
    assert b"reload refused" in done.stderr and b"allow_remote_shutdown" in done.stderr
    assert "configuration reloaded" not in server.log()
