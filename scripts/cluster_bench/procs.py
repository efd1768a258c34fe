"""`pipeline` child processes of a benchmark, each logging to a file of its own, never left
running: `Children.close` terminates what still runs, and kills what does not exit in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PIPELINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]
# A daemon drains within its drain_timeout_s (10 s by default) after SIGTERM; past this it is
# killed, so a stuck child never outlives the benchmark.
STOP_TIMEOUT_S = 20.0
# A `pipeline serve` binds its port within a few seconds, also on a busy two-core machine.
LISTEN_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    """The three load averages, as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(f"bench-cluster: {message}", file=sys.stderr, flush=True)


class Children:
    """The processes one benchmark started, by name; their logs in ``log_dir/<name>.log``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str | Path) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [*PIPELINE, *map(str, args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]

    def wait_listening(self, name: str, port: int) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                pass
            if self.procs[name].poll() is not None:
                raise SystemExit(f"{name} exited:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} not listening on {port}:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the exit (killing it after ``STOP_TIMEOUT_S``)."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        _reap(proc)

    def reap(self, name: str) -> None:
        """Wait for the exit of a child already signalled (killing it after ``STOP_TIMEOUT_S``)."""
        _reap(self.procs.pop(name))

    def close(self) -> None:
        """Terminate every child at once (they drain side by side), then wait for each."""
        procs, self.procs = list(self.procs.values()), {}
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    # One signal only: a second one would make a draining daemon stop at once.
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
