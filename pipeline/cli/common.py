"""What every ``pipeline`` command shares: options, parameter types, loading, exit codes.

* ``--category/-c`` and ``--partition/-p`` mean the same in every command; every numeric option
  carries a range; every time option is of the one type `TIME` (`pipeline.times`).
* An unknown category, partition or group is an error, exit 1, naming those that exist
  (`require_known`).
* An address is ``host[:port]`` or ``[v6]:port`` in every command that takes one (`ADDRESS`,
  `CASSANDRA_ADDRESS`): the port may be left out, not left empty.
* ``--timeout`` is seconds per call wherever a command talks to a server (`timeout_option`).
* Commands that run trio go through `run_async`: the errors a command expects become one line
  and exit 1, whatever nursery they come out of.  A closed standard output (``| head``) is a
  ``BrokenPipeError`` that reaches click bare, from a plain loop or from a nursery alike, and
  click exits 1 at once without a word, as for every command.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import trio

from journal import PartitionId
from pipeline import config as config_module
from pipeline import logs, times
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError, find_error

T = TypeVar("T")
K = TypeVar("K", str, bytes, int)
FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)

SCRIBE_PORT = 1463
CASSANDRA_PORT = 9042
EXIT_CONFIG = 78  # EX_CONFIG: invalid configuration
EXIT_STARTUP = 70  # EX_SOFTWARE: a daemon could not start

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="PIPELINE_CONFIG",
    help="TOML configuration file (conf/pipeline.toml is an annotated example).",
)

category_option = click.option("--category", "-c", help="Only this category (exact, as text).")
partition_option = click.option(
    "--partition", "-p", type=click.IntRange(min=0), help="Only this partition."
)
offset_type = click.IntRange(min=0)


class TimeParam(click.ParamType[int, Any]):
    """A time as `pipeline.times` reads it, converted to ms since the epoch."""

    name = "time"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return times.parse_time(str(value), int(self._clock() * 1000))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME = TimeParam()


def parse_host_port(value: str, default_port: int = SCRIBE_PORT) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` into a pair; ValueError says what is wrong.

    A port left out is ``default_port``; a port left empty (``host:``) is a mistake, not a
    request for the default.
    """
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [v6-address]:port, got {value!r}")
        has_port, port = bool(rest), rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
        has_port = True
    else:
        host, has_port, port = value, False, ""
    if not host:
        raise ValueError(f"no host in {value!r}")
    if not has_port:
        return host, default_port
    if not port:
        raise ValueError(f"empty port in {value!r} (leave out the colon for {default_port})")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in {value!r} (expected 1 to 65535)")
    return host, int(port)


class AddressParam(click.ParamType[tuple[str, int], Any]):
    """An address as `parse_host_port` reads it, as a ``(host, port)`` pair."""

    name = "host[:port]"

    def __init__(self, default_port: int) -> None:
        self.default_port = default_port

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_host_port(str(value), self.default_port)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ADDRESS = AddressParam(SCRIBE_PORT)
CASSANDRA_ADDRESS = AddressParam(CASSANDRA_PORT)


def target_option(
    *names: str, default: str | None = "127.0.0.1", what: str = "Server"
) -> Callable[[FC], FC]:
    """A Scribe server's address (``--target`` unless other ``names`` are given)."""
    return click.option(
        *(names or ("--target",)),
        "target",
        type=ADDRESS,
        default=default,
        show_default=default is not None,
        help=f"{what} as host[:port] (port {SCRIBE_PORT} unless given).",
    )


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    default=10.0,
    show_default=True,
    help="Seconds per call (connect, send, reply).",
)


def time_option(name: str, what: str, default: str | None = None) -> Callable[[Any], Any]:
    """A time option; ``what`` starts its help, the accepted forms end it."""
    return click.option(
        name,
        type=TIME,
        default=default,
        show_default=default is not None,
        help=f"{what}: {times.ACCEPTED}.",
    )


def require_known(
    kind: str,
    wanted: K,
    known: Iterable[K],
    where: str = "",
    *,
    name: Callable[[K], str] = str,
) -> None:
    """Exit 1 naming the ``kind``s that exist (in ``where``) when ``wanted`` is not one of
    ``known``; ``name`` shows one to a person."""
    names = sorted(set(known))
    if wanted not in names:
        shown = str(wanted) if isinstance(wanted, int) else repr(name(wanted))
        place = f" in {where}" if where else ""
        listed = ", ".join(name(k) for k in names) or "none"
        plural = kind.removesuffix("y") + "ies" if kind.endswith("y") else kind + "s"
        raise click.ClickException(f"no {kind} {shown}{place} ({plural}: {listed})")


def select_partitions(
    pids: Iterable[PartitionId], category: str | None, partition: int | None, where: str
) -> list[PartitionId]:
    """The partitions ``-c``/``-p`` name, sorted; exit 1 naming those that exist when a
    category or partition named is not there."""
    pids = sorted(pids, key=lambda p: (p.category, p.partition))
    if category is not None:
        wanted = category_bytes(category)
        require_known("category", wanted, (p.category for p in pids), where, name=text)
        pids = [p for p in pids if p.category == wanted]
        where = f"category {category!r}"
    if partition is not None:
        require_known("partition", partition, (p.partition for p in pids), where)
        pids = [p for p in pids if p.partition == partition]
    return pids


def run_async(
    work: Callable[..., Awaitable[T]], *args: Any, errors: tuple[type[Exception], ...] = ()
) -> T:
    """``trio.run(work, *args)`` for a command (see the module docstring)."""
    try:
        return trio.run(work, *args)
    except (Exception, BaseExceptionGroup) as exc:
        for bare in (BrokenPipeError, KeyboardInterrupt):
            if (found := find_error(exc, bare)) is not None:
                raise found from None
        for cls in errors:
            if (error := find_error(exc, cls)) is not None:
                raise click.ClickException(str(error)) from exc
        if (refused := find_error(exc, click.ClickException)) is not None:
            raise refused from None
        raise


def write_json_lines(out: IO[str], records: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, flushed; a closed ``out`` raises BrokenPipeError."""
    for record in records:
        out.write(json.dumps(record))
        out.write("\n")
    out.flush()


def tool_logs(config: PipelineConfig) -> None:
    """Warnings of the code a tool runs (a forward retry, an offset moved) on stderr as the
    daemons write them, fields and all, instead of Python's bare message."""
    logs.configure("warning", config.log.format)


def load_config(config_path: Path | None, **flags: Any) -> PipelineConfig:
    """Configuration with flags over environment over file; exits 78 when invalid."""
    try:
        return config_module.load(config_path, overrides=config_module.flag_overrides(**flags))
    except ConfigError as exc:
        click.echo(f"pipeline: invalid configuration: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def group_section(config: PipelineConfig, name: str) -> ConsumerSection:
    """The configured consumer group ``name``; exits 78 naming the known groups otherwise."""
    try:
        return config.group(name)
    except ConfigError as exc:
        click.echo(f"pipeline: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def text(raw: bytes) -> str:
    """Raw bytes (a category, a metadata key) for a person: UTF-8, others as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def category_bytes(category: str) -> bytes:
    """A category given on the command line, as the raw bytes the journal keeps."""
    return category.encode("utf-8", "surrogateescape")


def with_message(record: dict[str, Any], message: bytes) -> dict[str, Any]:
    """``record`` with ``message`` as UTF-8 text, or base64 with ``"encoding": "base64"``."""
    try:
        record["message"] = message.decode("utf-8")
    except UnicodeDecodeError:
        record["message"] = base64.b64encode(message).decode("ascii")
        record["encoding"] = "base64"
    return record


def metadata_record(metadata: Mapping[bytes, bytes]) -> dict[str, str]:
    """LogEntry metadata as JSON-ready text."""
    return {text(k): text(v) for k, v in metadata.items()}
