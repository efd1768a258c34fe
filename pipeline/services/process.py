"""Running one local Java server: Java, ports, pid files, start, readiness, stop.

A managed server runs in its own session (it outlives `pipeline services start`), with its pid in
``var/<name>/<name>.pid``.  `stop` signals only a pid from that file, and only when the process's
command line still names our main class and our var folder (a reused pid is someone else's).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StartupError

__all__ = [
    "JavaInfo",
    "Launch",
    "ManagedService",
    "ServiceError",
    "ServiceStatus",
    "StartResult",
    "find_java",
    "port_accepts",
    "port_in_use",
    "tail_lines",
]

# Lines of a server's log shown when it fails: enough for a Java stack trace's head.
LOG_TAIL_LINES = 40

# How long `stop` waits after SIGTERM before SIGKILL: Cassandra drains its memtables first.
STOP_TIMEOUT_S = 60.0

# The folder with the project's service configuration (cassandra.yaml, zoo.cfg, POMs, ...).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "services"

Progress = Callable[[str], None]


class ServiceError(StartupError):
    """A local service could not be fetched, started, reached or stopped."""

    def __init__(self, service: str, message: str, *, log_tail: Sequence[str] = ()) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.log_tail = tuple(log_tail)


def tail_lines(paths: Sequence[Path], count: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``count`` lines of each existing file in ``paths``, each headed by its name."""
    out: list[str] = []
    for path in paths:
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                lines = f.read().decode("utf-8", "replace").splitlines()[-count:]
        except OSError:
            continue
        if lines:
            out.append(f"==> {path} <==")
            out.extend(lines)
    return out


@dataclass(frozen=True)
class JavaInfo:
    path: str
    major: int
    version: str


def find_java(service: str, *, minimum: int, maximum: int | None = None) -> JavaInfo:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked for its major version."""
    java_home = os.environ.get("JAVA_HOME")
    candidate: str | None = None
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        candidate = str(Path(java_home, "bin", "java"))
    else:
        candidate = shutil.which("java")
    if candidate is None:
        raise ServiceError(
            service,
            f"Java not found (no $JAVA_HOME/bin/java, no java on PATH); {service} needs Java "
            f"{minimum}{'' if maximum == minimum else '+'} (Debian: apt-get install "
            "openjdk-17-jre-headless)",
        )
    try:
        result = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(service, f"cannot run {candidate} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?[^"]*"', result.stderr + result.stdout)
    if result.returncode != 0 or match is None:
        raise ServiceError(service, f"{candidate} -version failed: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392"
        major = int(match.group(2))
    if major < minimum or (maximum is not None and major > maximum):
        wanted = str(minimum) if maximum == minimum else f"{minimum} or newer"
        raise ServiceError(
            service, f"{candidate} is Java {major}; {service} needs Java {wanted} (set JAVA_HOME)"
        )
    return JavaInfo(candidate, major, match.group(0))


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from a server that just stopped is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _proc_state(pid: int) -> str | None:
    """The process's state letter from /proc (``Z`` for a zombie), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


# Servers this process started and that may still run (tests restart servers in-process): kept
# so that they are reaped when they exit, rather than left as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    state = _proc_state(pid)
    if state is None:
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    enabled: bool
    host: str
    port: int
    running: bool  # something answers on host:port
    pid: int | None  # the server we started, when it is alive
    managed: bool  # the answering server is the one we started

    def as_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "running": self.running,
            "pid": self.pid,
            "managed": self.managed,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class Launch:
    """A server `ManagedService.launch` started (``process``) or found running (its ``pid``),
    or one answering on the port that is not ours (``foreign``)."""

    pid: int | None
    process: subprocess.Popen[bytes] | None
    began: float
    foreign: bool


@dataclass(frozen=True)
class StartResult:
    name: str
    address: str
    pid: int | None
    started: bool  # False: an already running server was reused
    seconds: float
    rss_kib: int | None


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class ManagedService(ABC):
    """One Java server that `pipeline services` fetches, configures, starts and stops."""

    name: str
    main_class: str

    def __init__(
        self, var_dir: Path, cache_dir: Path, host: str, port: int, label: str | None = None
    ) -> None:
        # "zookeeper" for a standalone server, "zookeeper-2" for a member of an ensemble: the
        # name in messages and the server's folder under var_dir.
        self.label = label or self.name
        self.home = (var_dir / self.label).resolve()
        self.cache_dir = cache_dir
        self.host = host
        self.port = port
        self.log_dir = self.home / "logs"
        self.pid_file = self.home / f"{self.name}.pid"
        self.output_log = self.log_dir / "output.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- what each server defines ---------------------------------------------------------

    @abstractmethod
    def java(self) -> JavaInfo: ...

    @abstractmethod
    def fetch(self, progress: Progress) -> Path:
        """The folder of the server's jars (fetched on first use)."""

    @abstractmethod
    def prepare(self) -> list[str]:
        """Write the server's configuration under ``home``; return its JVM arguments
        (everything between ``java`` and ``-cp``)."""

    @abstractmethod
    def probe(self, timeout_s: float) -> None:
        """Raise unless the server answers its protocol (a session opens, CQL answers)."""

    def extra_ports(self) -> list[int]:
        """Other ports the server binds on ``host``, checked before starting."""
        return []

    def log_files(self) -> list[Path]:
        return [self.log_dir / f"{self.name}.log", self.output_log]

    def log_tail(self, count: int = LOG_TAIL_LINES) -> list[str]:
        return tail_lines(self.log_files(), count)

    # -- pid file -------------------------------------------------------------------------

    def managed_pid(self) -> int | None:
        """The pid from our pid file when that process is alive and still our server."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _alive(pid):
            return None
        cmdline = _cmdline(pid)
        # The folder with its separator: var/zookeeper must not claim var/zookeeper-1's server.
        folder = f"{self.home}{os.sep}"
        if self.main_class not in cmdline or not any(folder in a for a in cmdline):
            return None
        return pid

    # -- status, start, stop --------------------------------------------------------------

    def status(self, enabled: bool = True) -> ServiceStatus:
        pid = self.managed_pid()
        running = port_accepts(self.host, self.port)
        return ServiceStatus(
            self.label, enabled, self.host, self.port, running, pid, pid is not None and running
        )

    def start(self, progress: Progress, timeout_s: float) -> StartResult:
        """Start the server and wait until it answers, or reuse one that already does."""
        return self.wait_ready(self.launch(progress), progress, time.monotonic() + timeout_s)

    def launch(self, progress: Progress) -> Launch:
        """Start the server's process without waiting for it (an ensemble's members answer only
        once enough of them run), or find the one already running."""
        pid = self.managed_pid()
        if pid is not None:
            progress(f"{self.label}: already running (pid {pid}); waiting until it answers")
            return Launch(pid, None, time.monotonic(), foreign=False)
        self.pid_file.unlink(missing_ok=True)
        if port_in_use(self.host, self.port):
            try:
                self.probe(timeout_s=5.0)
            except Exception as exc:
                raise ServiceError(
                    self.label,
                    f"port {self.address} is in use by another program that does not answer "
                    f"as {self.name} ({exc}); stop it or choose another port",
                ) from exc
            progress(f"{self.label}: reusing the server already answering at {self.address}")
            return Launch(None, None, time.monotonic(), foreign=True)
        for port in self.extra_ports():
            if port_in_use(self.host, port):
                raise ServiceError(
                    self.label,
                    f"port {self.host}:{port} ({self.name} needs it too) is in use by another "
                    "program; stop it or choose another port",
                )
        java = self.java()
        lib = self.fetch(progress)
        jvm_args = self.prepare()
        command = [
            java.path,
            *jvm_args,
            "-cp",
            str(lib.resolve() / "*"),
            self.main_class,
            *self.main_args(),
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "command").write_text(" ".join(command) + "\n")
        progress(f"{self.label}: starting on {self.address}")
        began = time.monotonic()
        with self.output_log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command; no terminal signals
                close_fds=True,
            )
        _CHILDREN[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n")
        return Launch(process.pid, process, began, foreign=False)

    def wait_ready(self, launch: Launch, progress: Progress, deadline: float) -> StartResult:
        """Wait until the launched server answers; a server this call started that does not
        answer by ``deadline`` is stopped again."""
        if launch.foreign or launch.pid is None:
            return StartResult(self.label, self.address, None, False, 0.0, None)
        if launch.process is None:
            self._wait(None, launch.pid, progress, deadline)
            return StartResult(
                self.label, self.address, launch.pid, False, 0.0, rss_kib(launch.pid)
            )
        try:
            self._wait(launch.process, launch.pid, progress, deadline)
        except BaseException:
            self.abandon(launch)
            raise
        return StartResult(
            self.label,
            self.address,
            launch.pid,
            True,
            time.monotonic() - launch.began,
            rss_kib(launch.pid),
        )

    def abandon(self, launch: Launch) -> None:
        """Stop a server that ``launch`` started and that will not be waited for."""
        if launch.process is not None and launch.process.poll() is None:
            self._terminate(launch.process.pid, 10.0)
        if launch.process is not None:
            self.pid_file.unlink(missing_ok=True)

    def main_args(self) -> list[str]:
        return []

    def _wait(
        self,
        process: subprocess.Popen[bytes] | None,
        pid: int,
        progress: Progress,
        deadline: float,
    ) -> None:
        began = time.monotonic()
        last_report = began
        last_error = "not listening yet"
        while True:
            exited = process.poll() if process is not None else (None if _alive(pid) else -1)
            if exited is not None:
                raise ServiceError(
                    self.label,
                    f"the server exited (status {exited}) while starting; log tail follows",
                    log_tail=self.log_tail(),
                )
            if port_accepts(self.host, self.port):
                try:
                    self.probe(timeout_s=5.0)
                    return
                except Exception as exc:
                    last_error = str(exc)
            now = time.monotonic()
            if now >= deadline:
                raise ServiceError(
                    self.label,
                    f"not ready on {self.address} after {now - began:.0f} s ({last_error}); "
                    "log tail follows",
                    log_tail=self.log_tail(),
                )
            if now - last_report >= 5.0:
                progress(f"{self.label}: waiting for {self.address} ... {now - began:.0f} s")
                last_report = now
            time.sleep(0.25)

    def stop(self, progress: Progress, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the server we started (by pid) and wait for it to exit; False if none runs."""
        pid = self.managed_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        progress(f"{self.label}: stopping pid {pid}")
        self._terminate(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _terminate(self, pid: int, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kill_deadline = time.monotonic() + 10.0
                while _alive(pid) and time.monotonic() < kill_deadline:
                    time.sleep(0.05)
                if _alive(pid):
                    raise ServiceError(self.label, f"pid {pid} survived SIGKILL")
                return
            time.sleep(0.05)

    @staticmethod
    def read_options(path: Path) -> list[str]:
        """JVM flags from an options file: one per line; ``#`` starts a comment."""
        flags: list[str] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            # "--add-opens a=b" is one flag with its value: the JVM takes either spelling.
            flags.extend(line.split(None, 1) if line.startswith("--add-") else [line])
        return flags
