"""Fixtures for the end-to-end tests: real ``pipeline`` processes, in-process daemons, journals.

* ``pipeline_server`` starts ``pipeline serve`` as a child process on 127.0.0.1, port 0 (the bound
  port is read from its ``listening`` log line), with stderr in a file.  Every process a test
  started is killed at teardown, and when the test fails the tail of each server's log is attached
  to the report (kazoo's harness does the same with ZooKeeper's log).
* ``run_pipeline`` runs one CLI command to completion.
* ``running_daemon`` runs ``serve_pipeline`` in this trio run, for tests that inject a ``FileIO``.
* ``read_journal`` / ``verify_journal`` read a journal directory the way another process does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import pytest
import trio
from scribe_fakes import apache_generated

import scribe_compat
from journal import (
    FileIO,
    JournalMessage,
    PartitionId,
    VerifyProblem,
    list_partitions,
    open_reader,
    verify,
)
from scribe_compat import ScribeClient

# The console script users run; ``-P`` keeps the working directory off ``sys.path`` otherwise (a
# journal directory named ``journal`` in it would shadow the package).
_SCRIPT = Path(sys.executable).parent / "pipeline"
PIPELINE = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-P", "-c", "from pipeline.cli import main; main()"]
)
LISTENING = re.compile(rb"msg=listening .*?port=(\d+)")
IDL = Path(scribe_compat.__file__).parent / "idl"

_servers_key = pytest.StashKey[list["ServerProcess"]]()


def pipeline_command(*args: str | Path) -> list[str]:
    return [*PIPELINE, *map(str, args)]


def run_pipeline(
    *args: str | Path,
    input: bytes | None = None,
    timeout: float = 30.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one ``pipeline`` command to completion, capturing its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    if env:
        full_env.update(env)
    return subprocess.run(
        pipeline_command(*args),
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
        check=False,
    )


_EXEC_WITH_NOFILE = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def with_nofile(command: list[str], nofile: tuple[int, int] | None) -> list[str]:
    """``command``, run with RLIMIT_NOFILE ``(soft, hard)`` when given: set by a small Python
    that then execs it (the same pid), since ``preexec_fn`` is unsafe in a threaded process."""
    if nofile is None:
        return command
    return [sys.executable, "-c", _EXEC_WITH_NOFILE, *map(str, nofile), *command]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class ServerProcess:
    """One ``pipeline serve`` child process; restartable on the same journal directory."""

    def __init__(
        self, journal_dir: Path, log_path: Path, config: Path | None, extra: Sequence[str]
    ) -> None:
        self.journal_dir = journal_dir
        self.log_path = log_path
        self.config = config
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log_start = 0
        # RLIMIT_NOFILE (soft, hard) for the process, e.g. to run it short of descriptors.
        self.nofile: tuple[int, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def arguments(self) -> list[str | Path]:
        """The ``pipeline`` command line this process runs."""
        args: list[str | Path] = ["serve", "--host", "127.0.0.1", "--port", "0"]
        args += ["--journal-dir", self.journal_dir]
        if self.config is not None:
            args += ["--config", self.config]
        return args + self.extra

    def working_directory(self) -> Path:
        # The journal's parent, so a relative path the server wrongly derived from a category
        # would land where ``files_outside`` looks.
        return self.journal_dir.parent

    def start(self, timeout: float = 15.0) -> Self:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = self.arguments()
        name = f"pipeline {args[0]}"
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        cwd = self.working_directory()
        cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                with_nofile(pipeline_command(*args), self.nofile),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        deadline = time.monotonic() + timeout
        while True:
            match = LISTENING.search(self.new_log())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {self.proc.returncode}:\n{self.log()[-5000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{name} did not listen in {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (drain) and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def new_log(self) -> bytes:
        """What this run of the process has logged so far."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_start)
                return f.read()
        except FileNotFoundError:
            return b""

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def client(self, *, framed: bool = True, strict: bool = False, timeout: float = 10.0) -> Any:
        return ScribeClient.connect(*self.address, timeout, framed=framed, strict=strict)


ServerFactory = Callable[..., ServerProcess]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for server in item.stash.get(_servers_key, []):
            text = server.log()
            if len(text) > 20_000:
                text = "...\n" + text[-20_000:]
            report.sections.append((f"pipeline server log {server.log_path}", text))
    return report


@pytest.fixture
def pipeline_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerFactory]:
    """A factory: ``pipeline_server(journal_dir=..., config=..., extra=[...])`` (not started)."""
    servers = request.node.stash.setdefault(_servers_key, [])

    def make(
        journal_dir: Path | None = None,
        config: Path | None = None,
        extra: Sequence[str] = (),
        log_name: str | None = None,
    ) -> ServerProcess:
        index = len(servers)
        server = ServerProcess(
            journal_dir or tmp_path / f"journal{index}",
            tmp_path / (log_name or f"server{index}.log"),
            config,
            extra,
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


# ------------------------------------------------------------------------- journal reading


def read_journal(journal_dir: Path) -> dict[PartitionId, list[JournalMessage]]:
    """Every message below each partition's high-water mark, read as another process does."""
    out: dict[PartitionId, list[JournalMessage]] = {}
    for info in list_partitions(journal_dir):
        out[info.pid] = read_partition(journal_dir, info.pid, info.earliest_offset)
    return out


def read_partition(journal_dir: Path, pid: PartitionId, offset: int = 0) -> list[JournalMessage]:
    messages: list[JournalMessage] = []
    reader = open_reader(journal_dir, pid, offset)
    try:
        while batch := reader.read(max_messages=10_000, max_bytes=16 << 20):
            messages += batch
    finally:
        reader.close()
    return messages


def journal_messages(journal_dir: Path) -> dict[bytes, list[bytes]]:
    """Category -> its messages, partitions concatenated in partition order."""
    out: dict[bytes, list[bytes]] = {}
    for pid, messages in sorted(
        read_journal(journal_dir).items(), key=lambda kv: (kv[0].category, kv[0].partition)
    ):
        out.setdefault(pid.category, []).extend(m.message for m in messages)
    return out


def verify_journal(journal_dir: Path) -> list[VerifyProblem]:
    return verify(journal_dir)


def files_outside(root: Path, allowed: Path) -> list[Path]:
    """Every path under ``root`` that is neither ``allowed``, inside it, nor one of its parents."""
    allowed = allowed.resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = (Path(dirpath) / name).resolve()
            if path != allowed and allowed not in path.parents and path not in allowed.parents:
                out.append(path)
    return out


# ------------------------------------------------------------------------- in-process daemons


def make_config(journal_dir: Path, **sections: Mapping[str, Any]) -> Any:
    """A validated ``PipelineConfig`` listening on 127.0.0.1:0, from TOML-shaped tables."""
    from pipeline.config import from_mapping

    data: dict[str, Any] = {k: dict(v) for k, v in sections.items()}
    server = data.setdefault("server", {})
    server.setdefault("host", "127.0.0.1")
    server.setdefault("port", 0)
    server.setdefault("drain_timeout_s", 2.0)
    data.setdefault("journal", {})["dir"] = str(journal_dir)
    return from_mapping(data)


@asynccontextmanager
async def running_daemon(config: Any, file_io: FileIO | None = None) -> AsyncIterator[Any]:
    """``serve_pipeline`` in a nursery; stops (drains) it on exit."""
    from pipeline.daemon import serve_pipeline

    async with trio.open_nursery() as nursery:
        daemon = await nursery.start(partial(serve_pipeline, config, file_io=file_io))
        try:
            yield daemon
        finally:
            daemon.request_stop()


# ------------------------------------------------------------------------- Apache Thrift


@pytest.fixture(scope="session")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Apache Thrift Python code generated by /usr/bin/thrift from our IDL files."""
    with apache_generated(tmp_path_factory.mktemp("apache_gen_e2e")) as generated:
        yield generated
