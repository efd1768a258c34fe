"""What every ``pipeline`` command shares: options, parameter types, loading, exit codes.

The convention, the same in every command (``tests/pipeline/test_cli_convention.py`` walks the
whole command tree to hold it):

* ``-c/--category``, ``-p/--partition``, ``-g/--group``, ``-d/--duration`` and ``-t/--target``
  mean one thing each, wherever they appear; ``-h`` is ``--help`` (except in ``cat``, where it
  is scribe_cat's host, an alias of ``--target``).
* ``-t/--target host[:port]`` is the Scribe server a command talks to (`ADDRESS`: the port may
  be left out, not left empty).  ``cat -h`` and ``ctl COMMAND [PORT]`` keep scribe_cat's and
  scribe_ctrl's forms as aliases.  ``--host``/``--port`` are the address a daemon listens on.
* ``--config`` is taken by every command that reads the configuration; ``--journal-dir`` by
  every command that reads a journal, over the configuration's ``journal.dir``.
* ``--log-level``/``--log-format`` by every daemon; ``--json`` by every command whose output a
  machine may read; ``--yes`` by every command that deletes or rewrites data.
* Every numeric option carries a range; every time option is of the one type `TIME`
  (`pipeline.times`); ``--timeout`` is seconds per call wherever a command talks to a server.
* An unknown category, partition or group is an error, exit 1, naming those that exist
  (`require_known`).
* An error is one line on standard error, ``Error: ...``, with the exit code of `EXIT_CODES`.
* Commands that run trio go through `run_async`: the errors a command expects become one line
  and exit 1, whatever nursery they come out of.  A closed standard output (``| head``) is a
  ``BrokenPipeError`` that reaches click bare, from a plain loop or from a nursery alike, and
  click exits 1 at once without a word, as for every command.
"""

from __future__ import annotations

import base64
import json
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
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's own
EXIT_CONFIG = 78  # EX_CONFIG: invalid configuration
EXIT_STARTUP = 70  # EX_SOFTWARE: a daemon or a service could not start

# For ``pipeline --help`` and the README's "Exit codes" (a test keeps the two in step).
EXIT_CODES = (
    ("0", "success"),
    ("1", "the command failed: damage found, an unknown name, a server unreachable or refusing"),
    ("2", "usage: an unknown option, a value out of range"),
    ("70", "a daemon could not start; a local service could not start or stop"),
    ("78", "invalid configuration: the key and the problem are named"),
    ("84", "cat: the server answered TRY_LATER (as scribe_cat)"),
    ("2, 3", "ctl status: the server is ALIVE; not ALIVE or unreachable (as scribe_ctrl)"),
)

HELP_OPTION_NAMES = ["-h", "--help"]


class CommandError(click.ClickException):
    """A command's own failure: ``Error: <message>`` on stderr, exit 1."""

    exit_code = EXIT_FAILED


class InvalidConfigError(CommandError):
    """The configuration does not load, or does not fit what the command needs: exit 78."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid configuration: {message}")


class CannotStartError(CommandError):
    """A daemon or a service it needs could not start: exit 70."""

    exit_code = EXIT_STARTUP

    def __init__(self, message: str) -> None:
        super().__init__(f"cannot start: {message}")


def error_line(message: str) -> None:
    """One of several problems a command reports before it exits, in the errors' own form."""
    click.echo(f"Error: {' '.join(message.split())}", err=True)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="PIPELINE_CONFIG",
    help="TOML configuration file (conf/pipeline.toml is an annotated example).",
)

journal_dir_option = click.option(
    "--journal-dir",
    "journal_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The journal directory [default: the configuration's journal.dir, var/journal].",
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


def parse_host_port(value: str, default_port: int | None = SCRIBE_PORT) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` into a pair; ValueError says what is wrong.

    A port left out is ``default_port`` (a mistake when there is none); a port left empty
    (``host:``) is a mistake, not a request for the default.
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
        if default_port is None:
            raise ValueError(f"no port in {value!r} (expected host:port)")
        return host, default_port
    if not port:
        omit = "" if default_port is None else f" (leave out the colon for {default_port})"
        raise ValueError(f"empty port in {value!r}{omit}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in {value!r} (expected 1 to 65535)")
    return host, int(port)


class AddressParam(click.ParamType[tuple[str, int], Any]):
    """An address as `parse_host_port` reads it, as a ``(host, port)`` pair."""

    def __init__(self, default_port: int | None) -> None:
        self.default_port = default_port
        self.name = "host:port" if default_port is None else "host[:port]"

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
FETCH_ADDRESS = AddressParam(None)  # the fetch service has no conventional port


def target_option(
    *aliases: str, default: str | None = "127.0.0.1", what: str = "The Scribe server"
) -> Callable[[FC], FC]:
    """``-t/--target``: the Scribe server a command talks to, under ``aliases`` too."""
    return click.option(
        "--target",
        "-t",
        *aliases,
        "target",
        type=ADDRESS,
        default=default,
        show_default=default is not None,
        help=f"{what}, host[:port] (port {SCRIBE_PORT} unless given).",
    )


def log_options(command: FC) -> FC:
    """``--log-level`` and ``--log-format``, over the configuration's ``[log]``."""
    command = click.option(
        "--log-format", type=click.Choice(["logfmt", "json"]), help="Log line format."
    )(command)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        help="Lowest level logged [default: info].",
    )(command)


def journal_options(command: FC) -> FC:
    """``--config`` and ``--journal-dir``, for commands that read a journal (`journal_dir_of`)."""
    return config_option(journal_dir_option(command))


def journal_dir_of(config_path: Path | None, journal_dir: Path | None) -> Path:
    """The journal directory: ``--journal-dir``, else the configuration's (exit 78 when the
    configuration does not load)."""
    return load_config(config_path, journal__dir=journal_dir).journal.dir


timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    default=10.0,
    show_default=True,
    help="Seconds per call (connect, send, reply).",
)


def json_option(what: str) -> Callable[[FC], FC]:
    """``--json``: output for machines, ``what`` it prints."""
    return click.option("--json", "as_json", is_flag=True, help=what)


def duration_option(
    what: str = "Seconds.",
    *aliases: str,
    default: float = 10.0,
    low: float = 0.5,
    high: float = 3600,
) -> Callable[[FC], FC]:
    """``-d/--duration`` in seconds, from ``low`` (above it, when 0) to ``high``."""
    return click.option(
        "--duration",
        "-d",
        *aliases,
        "duration",
        type=click.FloatRange(low, high, min_open=low == 0),
        default=default,
        show_default=True,
        help=what,
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
        raise InvalidConfigError(str(exc)) from exc


def group_section(config: PipelineConfig, name: str) -> ConsumerSection:
    """The configured consumer group ``name``; exits 78 naming the known groups otherwise."""
    try:
        return config.group(name)
    except ConfigError as exc:
        raise InvalidConfigError(str(exc)) from exc


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
