"""systemd's notification protocol (``sd_notify``), spoken by the daemons themselves.

Under ``Type=notify`` systemd puts the address of a datagram socket in ``NOTIFY_SOCKET``: a
filesystem path, or an abstract socket written with a leading ``@``.  A notification is one
datagram of newline-separated ``KEY=value`` assignments.  What the daemons send:

* ``READY=1`` with a ``STATUS=`` line, once the server listens on its port and its journal is
  open, and (``pipeline run``, ``pipeline consume``) every consumer member has joined its group:
  units ordered after this one start only then, and ``systemctl start`` returns;
* ``STATUS=...`` whenever the line ``systemctl status`` shows changes: what the daemon listens
  on, ``WARNING - <problem>`` while fb303 would say WARNING (a failed reload, a damaged
  partition, a failed journal writer, a full disk), ``stopping: draining``;
* ``RELOADING=1`` with ``MONOTONIC_USEC=`` (the clock systemd compares it with) and the status
  ``reloading the configuration`` when a reload starts, and ``READY=1`` with the status once it
  has run, whether the new file loaded or not;
* ``STOPPING=1`` once draining starts;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, when systemd set one for this very process
  (``WATCHDOG_PID``, when present, names it).  It is sent from the event loop on purpose: a loop
  that is stuck stops pinging, and systemd restarts the daemon.

Nothing here may stop a daemon or slow it down: the socket is non-blocking, so a send never
waits, and a send that fails is logged once and otherwise ignored.  Without ``NOTIFY_SOCKET``
nothing is sent and no socket is opened.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import trio

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

# How soon ``systemctl status`` shows a problem appearing or going away.  Computing the line is a
# few attribute reads and a send happens only when it changed, so once a second costs nothing.
STATUS_CHECK_INTERVAL_S = 1.0
STOPPING_STATUS = "stopping: draining"
RELOADING_STATUS = "reloading the configuration"
# fb303's status name and its details, as ``pipeline ctl status`` prints them.
WARNING_PREFIX = "WARNING - "

Problems = Callable[[], list[str]]


@dataclass(frozen=True)
class NotifyTarget:
    """Where notifications go: ``address`` as systemd wrote it, ``sockaddr`` as AF_UNIX takes it
    (an abstract name begins with NUL), and the watchdog's interval when one is asked for."""

    address: str
    sockaddr: str
    watchdog_interval_s: float | None


def target_from_environment(environ: Mapping[str, str], pid: int) -> NotifyTarget | None:
    """The target systemd set up for process ``pid``, or None when there is none (or it is of a
    kind this module does not speak, which is logged)."""
    address = environ.get(ENV_SOCKET, "")
    if not address:
        return None
    if address.startswith("@"):
        sockaddr = "\0" + address[1:]
    elif address.startswith("/"):
        sockaddr = address
    else:
        # systemd also knows vsock:CID:PORT, for a service manager outside a virtual machine.
        log.warning(
            "systemd notifications off: only AF_UNIX sockets are supported",
            extra={"notify_socket": address},
        )
        return None
    return NotifyTarget(address, sockaddr, _watchdog_interval_s(environ, pid))


def _watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    usec = environ.get(ENV_WATCHDOG_USEC, "")
    if not usec:
        return None
    owner = environ.get(ENV_WATCHDOG_PID, "")
    if owner and owner != str(pid):
        return None  # the watchdog is another process's (this one inherited the environment)
    if not usec.isdigit() or int(usec) == 0:
        log.warning(
            "systemd watchdog off: WATCHDOG_USEC is not a positive integer",
            extra={"watchdog_usec": usec},
        )
        return None
    # Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is not yet a restart.
    return int(usec) / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd reads ``MONOTONIC_USEC`` on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """The daemon's side of the protocol; every method is a no-op without a target.

    ``ready`` is sent once; before it, a reload is not announced (systemd would take its
    ``READY=1`` for the start's), and after ``stopping`` nothing but the watchdog is sent.
    """

    def __init__(self, target: NotifyTarget | None) -> None:
        self.target = target
        self._send_failed = False
        self._ready = False
        self._stopping = False
        self._reloading = False
        self._status = ""
        self._sent_status: str | None = None
        self._problems: Problems = list
        self._socket: socket.socket | None = None
        if target is not None:
            try:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            except OSError as exc:
                self._failed(exc)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls(target_from_environment(os.environ if environ is None else environ, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- the daemon's states ---------------------------------------------------------------------

    def ready(self, status: str, problems: Problems = list) -> None:
        """Started: ``status`` says what runs; ``problems`` is asked what would make it WARNING."""
        if self._ready or self._stopping:
            return
        self._ready = True
        self._status = status
        self._problems = problems
        self._send("READY=1", self._status_assignment(force=True))

    def reloading(self) -> None:
        if self._ready and not self._stopping:
            self._reloading = True
            self._send(
                "RELOADING=1",
                f"MONOTONIC_USEC={monotonic_usec()}",
                self._status_assignment(force=True),
            )

    def reloaded(self) -> None:
        """The reload has run; the status says WARNING when the file did not load."""
        self._reloading = False
        if self._ready and not self._stopping:
            self._send("READY=1", self._status_assignment(force=True))

    def stopping(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._send("STOPPING=1", self._status_assignment(force=True))

    def refresh_status(self) -> None:
        """Send the status line if it changed since it was last sent."""
        if self._ready and (assignment := self._status_assignment(force=False)):
            self._send(assignment)

    async def follow_status(self, interval_s: float = STATUS_CHECK_INTERVAL_S) -> None:
        """Keep ``systemctl status`` current: a problem appearing or going away, until cancelled."""
        if not self.enabled:
            return
        while True:
            await trio.sleep(interval_s)
            self.refresh_status()

    async def serve_watchdog(self) -> None:
        """Ping systemd's watchdog until cancelled, when it asked for pings."""
        interval = None if self.target is None else self.target.watchdog_interval_s
        if interval is None or not self.enabled:
            return
        while True:
            self._send("WATCHDOG=1")
            await trio.sleep(interval)

    # -- sending ---------------------------------------------------------------------------------

    def status_line(self) -> str:
        if self._stopping:
            return STOPPING_STATUS
        if self._reloading:
            return RELOADING_STATUS
        problems = self._problems()
        return WARNING_PREFIX + "; ".join(problems) if problems else self._status

    def _status_assignment(self, *, force: bool) -> str:
        line = self.status_line()
        if line == self._sent_status and not force:
            return ""
        self._sent_status = line
        # One line: a newline would start another assignment.
        return "STATUS=" + " ".join(line.split())

    def _send(self, *assignments: str) -> None:
        if self._socket is None or self.target is None:
            return
        datagram = "\n".join(a for a in assignments if a).encode()
        try:
            self._socket.sendto(datagram, self.target.sockaddr)
        except OSError as exc:
            # Also BlockingIOError: systemd's queue is full and this one is dropped, rather than
            # the event loop waiting for it.
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if self._send_failed:
            return
        self._send_failed = True
        log.warning(
            "systemd notification failed; the daemon runs on (logged once)",
            extra={
                "notify_socket": None if self.target is None else self.target.address,
                "error": exc.strerror or type(exc).__name__,
            },
        )
