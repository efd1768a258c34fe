"""The ``[http]`` table: where the daemon's HTTP server listens and what one request may cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval

KiB = 1 << 10


@dataclass(frozen=True)
class HttpConfig:
    """Off unless ``port`` is set; loopback unless ``host`` says otherwise."""

    # Metrics and health carry no secrets but no authentication either: loopback by default,
    # as every other listener of the pipeline.
    host: str = "127.0.0.1"
    # Off unless set: an operator picks the port (conventionally 9xxx for Prometheus
    # exporters).  0 picks a free port, logged as "http listening".
    port: Annotated[int, Interval(ge=0, le=65535)] | None = None
    # Request line plus headers.  A scrape or a probe sends a few hundred bytes; h11's own
    # default is 16 KiB, and 8 KiB is what Apache and nginx accept per header line.  Over it:
    # 431 and the connection is closed.  At most 1 MiB.
    max_request_head_bytes: Annotated[int, Interval(ge=1 * KiB, le=1024 * KiB)] = 8 * KiB
    # Every route is a GET: a body is never needed, so a small one is read and ignored and a
    # larger one refused (413) before it is read.  At most 1 MiB.
    max_request_body_bytes: Annotated[int, Interval(ge=0, le=1024 * KiB)] = 1 * KiB
    # Connections at once.  Prometheus keeps one per target, load balancers one or two per
    # health check: 64 leaves room for people with curl; beyond it a new connection gets 503.
    max_connections: Annotated[int, Interval(ge=1, le=65536)] = 64
    # A request (head and body) must arrive within this, and a kept-alive connection with no
    # new request is closed after it: a slow or silent client holds a slot this long at most.
    # Prometheus' default scrape timeout is 10 s.
    read_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    # A response the client does not take within this is dropped with its connection.
    send_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0

    @property
    def enabled(self) -> bool:
        return self.port is not None
