"""File descriptors against a real ``pipeline serve`` under a low RLIMIT_NOFILE: a client that
invents categories gets the unroutable rule beyond ``journal.max_categories`` (counted), the
partition writers' open files stay bounded, status says WARNING when descriptors run short, and
the server restarts on a journal with more partitions than it has descriptors, or refuses a limit
too low with one line and exit 70."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from scribe_compat import FbStatus, LogEntry, ResultCode

from .conftest import (
    ServerFactory,
    ServerProcess,
    journal_messages,
    pipeline_command,
    with_nofile,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

LIMIT = 200  # soft and hard: the server cannot raise it
MAX_OPEN = 8
MAX_CATEGORIES = 40
MIN_FREE = 64
CONFIG = f"""
[journal]
max_open_partitions = {MAX_OPEN}
max_categories = {MAX_CATEGORIES}
min_free_descriptors = {MIN_FREE}
"""


def descriptors_of(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def holds_at_least(server: ServerProcess, descriptors: int) -> bool:
    return descriptors_of(server) >= descriptors


def wait_until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def log_one(server: ServerProcess, category: bytes, message: bytes = b"m") -> ResultCode:
    with server.client() as client:
        result: ResultCode = client.log([LogEntry(category=category, message=message)])
        return result


def status(server: ServerProcess) -> tuple[FbStatus, str]:
    with server.client() as client:
        return client.get_status(), client.get_status_details()


def limited_server(
    pipeline_server: ServerFactory, tmp_path: Path, **kwargs: object
) -> ServerProcess:
    config = write_config(tmp_path / "pipeline.toml", CONFIG)
    server = pipeline_server(config=config, **kwargs)
    server.nofile = (LIMIT, LIMIT)
    return server


def test_inventing_categories_is_bounded_and_counted(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    server = limited_server(pipeline_server, tmp_path).start()
    base = descriptors_of(server)
    with server.client() as client:
        for i in range(100):
            entry = LogEntry(category=b"cat%03d" % i, message=b"m%d" % i)
            # OK throughout: beyond the limit the route's unroutable rule (drop) applies.
            assert client.log([entry]) == ResultCode.OK, i
        counters = client.get_counters()
        assert client.get_status() == FbStatus.ALIVE, client.get_status_details()
    assert counters["scribe_overall:received good"] == MAX_CATEGORIES
    assert counters["scribe_overall:received bad"] == 100 - MAX_CATEGORIES
    assert counters["scribe_overall:over category limit"] == 100 - MAX_CATEGORIES
    assert counters[f"cat{MAX_CATEGORIES:03d}:over category limit"] == 1
    assert counters["journal:categories"] == MAX_CATEGORIES
    # The writers hold at most MAX_OPEN partitions' files, however many categories exist.
    assert counters["journal:open partition files"] <= 3 * MAX_OPEN
    assert descriptors_of(server) <= base + 3 * MAX_OPEN + 2
    # Known categories still take events, and new partitions of them too.
    assert log_one(server, b"cat000") == ResultCode.OK

    # Idle connections until fewer than MIN_FREE descriptors are left: WARNING, with the reason.
    idle = []
    try:
        while descriptors_of(server) < LIMIT - MIN_FREE + 5:
            idle.append(socket.create_connection(server.address, timeout=10))
            if len(idle) % 10 == 0:
                wait_until(partial(holds_at_least, server, base + len(idle)))
        state, details = status(server)
        assert state == FbStatus.WARNING
        assert "file descriptors running short" in details, details
        assert log_one(server, b"cat001") == ResultCode.OK  # short is not out
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: status(server)[0] == FbStatus.ALIVE)
    assert server.terminate() == 0
    messages = journal_messages(server.journal_dir)
    assert len(messages) == MAX_CATEGORIES
    assert messages[b"cat000"] == [b"m0", b"m"]


def test_restart_on_more_partitions_than_descriptors(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "pipeline.toml", CONFIG.replace(f"= {MAX_CATEGORIES}", "= 1000")
    )
    server = pipeline_server(config=config)
    server.nofile = (LIMIT, LIMIT)
    server.start()
    # Three files each would be 450 descriptors: more than the limit allows.
    n = 150
    with server.client() as client:
        for i in range(n):
            assert client.log([LogEntry(category=b"p%03d" % i, message=b"a")]) == ResultCode.OK
    assert server.terminate() == 0

    server.start()  # the same limit, the same journal
    assert "Traceback" not in server.log()
    with server.client() as client:
        assert client.get_status() == FbStatus.ALIVE, client.get_status_details()
        for i in range(n):
            assert client.log([LogEntry(category=b"p%03d" % i, message=b"b")]) == ResultCode.OK
        assert client.get_counters()["journal:open partition files"] <= 3 * MAX_OPEN
    assert server.terminate() == 0
    messages = journal_messages(server.journal_dir)
    assert len(messages) == n
    assert all(m == [b"a", b"b"] for m in messages.values())


def test_a_limit_too_low_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    # The default configuration keeps 128 partitions open: 384 descriptors, plus 64 free.
    command = pipeline_command("serve", "--port", "0", "--journal-dir", tmp_path / "journal")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    done = subprocess.run(
        with_nofile(command, (100, 100)), capture_output=True, timeout=30, env=env, check=False
    )
    assert done.returncode == 70, done
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    [line] = [x for x in stderr.splitlines() if x.startswith("Error:")]
    assert "file descriptor limit is 100" in line
    assert "journal.max_open_partitions" in line


def test_the_soft_limit_is_raised_to_the_hard_one(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    server = pipeline_server()
    server.nofile = (100, 1024)  # the default configuration needs 448
    server.start()
    with open(f"/proc/{server.pid}/limits") as f:
        [line] = [x for x in f if x.startswith("Max open files")]
    assert line.split()[3:5] == ["1024", "1024"]
    assert log_one(server, b"raised") == ResultCode.OK
    assert server.terminate() == 0
