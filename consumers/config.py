"""Configuration of the consumer side: one frozen dataclass per component.

Numeric fields declare their range beside their type (``annotated_types`` markers), which the
application's settings loader enforces, with every float finite.  What only the dataclass can
judge (a pattern, one field against another) raises ``ValueError`` whose message starts with
the field's name, so the loader can point at the offending key.  Defaults say why they are
what they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Interval

from scribe_compat.tls import ClientTlsConfig

MiB = 1 << 20

SINK_KINDS = ("files", "forward", "cassandra")
# Which journals a group reads: its own host's ("local": journal.dir, or one fetch_from server)
# or every log server registered in ZooKeeper ("registry").
JOURNAL_SOURCES = ("local", "registry")

Port = Annotated[int, Interval(ge=1, le=65535)]
# A retry waits at least a little and at most an hour (past that a paused partition looks dead).
BackoffS = Annotated[float, Interval(gt=0, le=3600)]
# Blocking file work per sink: a handful saturates a disk; hundreds only cost memory.
IoThreads = Annotated[int, Interval(ge=1, le=256)]


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be positive, got {value!r}")


def validate_pattern(pattern: str, field: str = "categories") -> None:
    """A category pattern as routing writes it: exact, ``prefix*``, ``*``/``default`` (all)."""
    if not pattern:
        raise ValueError(f"{field}: a pattern must not be empty")
    star = pattern.find("*")
    if star not in (-1, len(pattern) - 1):
        raise ValueError(f"{field}: {pattern!r}: '*' may only end a prefix pattern")


@dataclass(frozen=True)
class GroupConfig:
    """A consumer group: a name, the categories it consumes, and how it batches and commits."""

    name: str
    # Patterns: "name" (exact), "prefix*", or "*" / "default" for every category.
    categories: tuple[str, ...] = ("*",)
    sink: str = "files"
    # A batch closes at whichever limit comes first.  1000 messages / 1 MiB is what Scribe's
    # clients send per Log call; 50 ms of waiting bounds the latency a quiet partition adds.
    batch_messages: Annotated[int, Ge(1)] = 1000
    batch_bytes: Annotated[int, Ge(1)] = 1 * MiB
    # 0 sends what is there at once; a minute is already a long delay for a quiet partition.
    batch_wait_s: Annotated[float, Interval(ge=0, le=60)] = 0.05
    # Offsets are committed at most this often per partition (and always on revocation/stop): a
    # crash redelivers at most this much, and the coordinator sees one write per partition per
    # second instead of one per batch.  0 commits after every batch; an hour bounds redelivery.
    commit_interval_s: Annotated[float, Interval(ge=0, le=3600)] = 1.0
    # How often the journal directory is rescanned for new categories and partitions: from
    # 10 ms (more often only burns CPU) to an hour (a new category waits that long).
    discover_interval_s: Annotated[float, Interval(ge=0.01, le=3600)] = 2.0
    # A failing sink pauses its partition: first retry after backoff_initial_s, doubling up to
    # backoff_max_s, each delay jittered down to half so that partitions do not retry in lockstep.
    backoff_initial_s: BackoffS = 0.1
    backoff_max_s: BackoffS = 30.0
    # Read the journal through a log server's fetch service ("host:port", its [fetch] port)
    # instead of the files in journal.dir: the member may run on any host.  Empty: local files.
    fetch_from: str = ""
    # Connect and per-call timeout of the fetch service (beyond a long poll's own wait): a
    # call that takes longer is a transport error, retried on a new connection.
    fetch_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 30.0
    # TLS to fetch ports that have it ([fetch.tls] on the server): fetch_from's, or every
    # registered server's with journals = "registry".  Off unless fetch_tls.enabled.
    fetch_tls: ClientTlsConfig = field(default_factory=ClientTlsConfig)
    # "local": the files in journal.dir (or the fetch_from server).  "registry": every log
    # server registered in ZooKeeper, each through its fetch service; the group then owns
    # (journal id, category, partition) units.  Local is the default: it needs nothing else.
    journals: str = "local"
    # With journals = "registry": the units of the journal in this host's journal.dir are read
    # from its files rather than through its server's fetch service (same messages, no trip).
    read_local: bool = True

    def __post_init__(self) -> None:
        if self.journals not in JOURNAL_SOURCES:
            raise ValueError(f"journals must be one of {JOURNAL_SOURCES}, got {self.journals!r}")
        if self.journals == "registry" and self.fetch_from:
            raise ValueError(
                'journals: "registry" reads every registered server; leave fetch_from empty'
            )
        if self.fetch_from:
            parse_address(self.fetch_from, "fetch_from")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a non-empty name without '/', got {self.name!r}")
        if not isinstance(self.categories, tuple) or not self.categories:
            raise ValueError(
                f"categories must be a non-empty tuple of patterns, got {self.categories!r}"
            )
        for pattern in self.categories:
            validate_pattern(pattern)
        if self.sink not in SINK_KINDS:
            raise ValueError(f"sink must be one of {SINK_KINDS}, got {self.sink!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be less than backoff_initial_s")


def parse_address(text: str, field: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as ``(host, port)``; ``ValueError`` naming ``field``."""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{field}: expected host:port with a port in 1..65535, got {text!r}")
    return host, int(port)


_PERIOD = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rotate_period(text: str | None) -> int | None:
    """Scribe's ``rotate_period`` in seconds: ``hourly``, ``daily``, ``N[s|m|h|d]``; None: never."""
    if text is None or text in ("", "never"):
        return None
    if text == "hourly":
        return 3600
    if text == "daily":
        return 86400
    match = _PERIOD.match(text)
    if match is None:
        raise ValueError(
            f"rotate_period must be hourly, daily, never or N followed by s, m, h or d, "
            f"got {text!r}"
        )
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds < 1:
        raise ValueError(f"rotate_period must be at least one second, got {text!r}")
    return seconds


@dataclass(frozen=True)
class FileSinkConfig:
    """Scribe's file store: ``<file_path>/<category>/<category>[-YYYY-MM-DD]_NNNNN``."""

    file_path: Path
    # Scribe's default max_size: 1 GB.
    max_size: Annotated[int, Ge(1)] = 1_000_000_000
    # "hourly", "daily", "N[s|m|h|d]", or None/"never".  Files are dated only when set.
    rotate_period: str | None = None
    add_newlines: bool = False
    create_symlink: bool = True
    # Period boundaries and file dates in local time (as Scribe does) or UTC.
    timezone: str = "local"
    # Worker threads doing the blocking writes and fsyncs of this sink.
    io_threads: IoThreads = 4
    # Open data files kept (one per category written): well under the usual 1024-fd limit.
    max_open_files: Annotated[int, Ge(1)] = 256

    def __post_init__(self) -> None:
        try:
            parse_rotate_period(self.rotate_period)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.timezone not in ("local", "utc"):
            raise ValueError(f"timezone must be 'local' or 'utc', got {self.timezone!r}")

    @property
    def rotate_period_s(self) -> int | None:
        return parse_rotate_period(self.rotate_period)


@dataclass(frozen=True)
class ForwardSinkConfig:
    """Scribe's network store: forward to any Scribe-compatible server."""

    host: str
    port: Port = 1463
    # Connect and per-call timeout: a Log call that takes longer is a transport error
    # (reconnect).  At most an hour: socket timeouts have a platform limit, and a call that
    # long has failed anyway.
    timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    # Scribe's network store probes with an empty Log before batches larger than this (0:
    # before every batch).
    probe_threshold_bytes: Annotated[int, Ge(0)] = 4096
    # Entries per Log call: Scribe servers commonly accept a few thousand; bigger batches split.
    max_entries_per_call: Annotated[int, Ge(1)] = 1000
    backoff_initial_s: BackoffS = 0.1
    backoff_max_s: BackoffS = 10.0
    # Give up (raise SinkError, so the runtime pauses the partition) after this many failed
    # attempts at one call; None retries inside the sink until cancelled.
    max_attempts: Annotated[int, Ge(1)] | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be less than backoff_initial_s")


@dataclass(frozen=True)
class CassandraSinkConfig:
    """A group's ``[consumers.cassandra]``: which materializer, and its options.

    ``materializer`` is a built-in name (``events``, ``latest``, ``mapping``) or a plugin's
    ``package.module:ClassName``; ``options`` is the built-in's options dataclass, or the dict
    a plugin is built from.  The cluster itself is the top-level ``[cassandra]`` table.
    """

    materializer: str = "events"
    options: Any = None
    # A directory put on the import path before a plugin is imported.
    plugin_path: Path | None = None


@dataclass(frozen=True)
class LocalCoordinatorConfig:
    """The single-host coordinator: offsets and epochs in files, ownership by file locks."""

    state_dir: Path
    # How often a member re-reads membership and takes or gives back partitions.  A dead
    # member's partitions are consumed again within about this long.
    rescan_interval_s: float = 1.0
    # How long a graceful revocation may take (the member commits what its sink confirmed);
    # after that the lock is released anyway: a late commit is then fenced if someone took over.
    revoke_timeout_s: float = 30.0
    # Threads for the blocking file operations (flock, fsync), shared by all partitions.
    io_threads: int = 4

    def __post_init__(self) -> None:
        _positive("rescan_interval_s", self.rescan_interval_s)
        _positive("revoke_timeout_s", self.revoke_timeout_s)
        if self.io_threads < 1:
            raise ValueError(f"io_threads must be positive, got {self.io_threads!r}")
