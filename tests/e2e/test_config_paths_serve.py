"""A real ``pipeline serve`` started from another directory (as systemd starts it from ``/``)
keeps its journal beside its configuration file, and logs the journal's absolute path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scribe_compat import LogEntry, ResultCode, ScribeClient

from .conftest import LISTENING, journal_messages, pipeline_command

pytestmark = pytest.mark.timeout(60)


def test_journal_goes_next_to_the_configuration_file(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "scribe-pipeline"
    etc.mkdir(parents=True)
    config = etc / "pipeline.toml"
    config.write_text('[server]\nhost = "127.0.0.1"\nport = 0\n[journal]\ndir = "var/journal"\n')
    started_in = tmp_path / "cwd"
    started_in.mkdir()
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pipeline_command("serve", "--config", config),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=started_in,
            env=env,
        )
    try:
        deadline = time.monotonic() + 20
        while not (match := LISTENING.search(log_path.read_bytes())):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        with ScribeClient.connect("127.0.0.1", int(match.group(1)), 10.0) as client:
            assert client.log([LogEntry(b"paths", b"hello")]) == ResultCode.OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    journal = etc / "var" / "journal"
    assert journal_messages(journal) == {b"paths": [b"hello"]}
    assert list(started_in.iterdir()) == []  # nothing where it was started
    listening = re.search(r"msg=listening .*?journal=(\S+)", log_path.read_text())
    assert listening is not None and listening.group(1) == str(journal)
