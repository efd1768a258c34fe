"""The service manager's end of sd_notify for tests: a datagram socket bound where systemd
would bind one, in either of the forms ``NOTIFY_SOCKET`` can name."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def bound_notify_socket(form: str) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket and its address as ``NOTIFY_SOCKET`` spells it:
    ``form`` "path" (a file) or "abstract" (``@name``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        if form == "abstract":
            name = f"scribe-pipeline-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield sock, "@" + name
            return
        # A short directory: a socket path must fit sun_path's 108 bytes.
        with tempfile.TemporaryDirectory(prefix="notify", dir="/tmp") as directory:
            path = os.path.join(directory, "notify.sock")
            sock.bind(path)
            yield sock, path
