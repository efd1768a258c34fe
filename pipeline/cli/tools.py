"""``pipeline cat`` and ``pipeline ctl``: scribe_cat and scribe_ctrl, with their output and codes.

``cat`` sends stdin as one message (or one per line with ``--lines``), framed and non-strict as
scribe_cat does, and exits 84 on TRY_LATER.  A call over the server's limit
(``--max-message-bytes``, the server's default unless told) is refused before it is sent,
naming the limit: the server would only close the connection.

``ctl`` speaks fb303 framed with strict writes and keeps scribe_ctrl's exit codes: ``status``
exits 2 when ALIVE and 3 otherwise (also when the server cannot be reached); other commands
exit 0, or 1 on failure.  ``counters --json`` prints one JSON object (name to value), for
machines.  ``reload`` waits until the server has tried, and exits 1 with the reason when the
new configuration did not load or the server refused the call.
"""

from __future__ import annotations

import json
import sys
import time

import click

from pipeline.cli.common import SCRIBE_PORT, json_option, target_option, timeout_option
from pipeline.errors import describe
from pipeline.log_service import REINITIALIZE_REFUSED
from pipeline.reload import FAILED_PREFIX, RELOAD_FAILURES, RELOADS
from scribe_compat import (
    ClientError,
    CodecLimits,
    FbStatus,
    LogEntry,
    RequestTooLargeError,
    ResultCode,
    ScribeClient,
)

EXIT_TRY_LATER = 84
EXIT_ALIVE = 2
EXIT_NOT_ALIVE = 3


# ``-h`` is scribe_cat's host here, so only ``--help`` asks for help.
@click.command("cat", context_settings={"help_option_names": ["--help"]})
@target_option("-h", "--host")
@click.option("--lines", is_flag=True, help="Send each line of stdin as its own message.")
@timeout_option
@click.option(
    "--max-message-bytes",
    type=click.IntRange(min=1),
    default=CodecLimits.max_message_bytes,
    show_default=True,
    help="The server's limit on one call: a larger one is refused here, before it is sent "
    "(a pipeline server's server.limits.max_message_bytes and max_frame_bytes).",
)
@click.argument("category")
def cat_command(
    target: tuple[str, int], lines: bool, timeout: float, max_message_bytes: int, category: str
) -> None:
    """Send standard input to CATEGORY (like scribe_cat); exit 84 on TRY_LATER."""
    host, port = target
    data = sys.stdin.buffer.read()
    raw_category = category.encode("utf-8", "surrogateescape")
    messages = _lines(data) if lines else [data]
    entries = [LogEntry(category=raw_category, message=m) for m in messages]
    try:
        with ScribeClient.connect(
            host, port, timeout, framed=True, strict=False, max_request_bytes=max_message_bytes
        ) as client:
            result = client.log(entries)
    except RequestTooLargeError as exc:
        raise click.ClickException(
            describe(f"{host}:{port}", f"{exc} (--max-message-bytes, when the server allows more)")
        ) from exc
    except ClientError as exc:
        raise click.ClickException(describe(f"{host}:{port}", exc)) from exc
    if result == ResultCode.TRY_LATER:
        click.echo("TRY_LATER: the server asked to retry later", err=True)
        sys.exit(EXIT_TRY_LATER)


def _lines(data: bytes) -> list[bytes]:
    """One message per ``\n``-terminated line (other bytes, ``\r`` included, are kept)."""
    messages = data.split(b"\n")
    if messages[-1] == b"":
        messages.pop()
    return messages


CTL_COMMANDS = ("status", "counters", "version", "name", "alive", "stop", "reload")


@click.command("ctl")
@click.argument("command", type=click.Choice(CTL_COMMANDS))
@click.argument("port", type=click.IntRange(1, 65535), required=False)
@target_option(default=None, what="The server [default: 127.0.0.1:1463]")
@timeout_option
@json_option("counters: one JSON object, name to value, sorted.")
def ctl_command(
    command: str, port: int | None, target: tuple[str, int] | None, timeout: float, as_json: bool
) -> None:
    """Manage a running server over fb303 (like scribe_ctrl): COMMAND [PORT].

    PORT alone is scribe_ctrl's form, for a server on this host: the same as --target
    127.0.0.1:PORT.
    """
    if as_json and command != "counters":
        raise click.UsageError(f"--json is for counters, not {command}")
    if target is not None and port is not None:
        raise click.UsageError("give the address once: --target host:port or PORT")
    host, port = target or ("127.0.0.1", port or SCRIBE_PORT)
    try:
        with ScribeClient.connect(host, port, timeout, framed=True, strict=True) as client:
            code = _run_ctl(client, command, timeout, as_json=as_json)
    except ClientError as exc:
        click.echo(f"{command} failed: {describe(f'{host}:{port}', exc)}", err=True)
        sys.exit(EXIT_NOT_ALIVE if command == "status" else 1)
    sys.exit(code)


def _run_ctl(client: ScribeClient, command: str, timeout: float, *, as_json: bool = False) -> int:
    if command == "status":
        status = client.get_status()
        details = client.get_status_details()
        click.echo(status.name + (f" - {details}" if details else ""))
        return EXIT_ALIVE if status == FbStatus.ALIVE else EXIT_NOT_ALIVE
    if command == "counters":
        counters = dict(sorted(client.get_counters().items()))
        if as_json:
            click.echo(json.dumps(counters))
        else:
            for key, value in counters.items():
                click.echo(f"{key}: {value}")
    elif command == "version":
        click.echo(client.get_version())
    elif command == "name":
        click.echo(client.get_name())
    elif command == "alive":
        click.echo(client.alive_since())
    elif command == "stop":
        client.shutdown()
    elif command == "reload":
        return _reload(client, timeout)
    return 0


def _reload(client: ScribeClient, timeout: float) -> int:
    """fb303 reinitialize, then wait until the server has tried and say how it went.

    reinitialize is oneway, so the outcome is read from the counters the server keeps for it
    (``pipeline.reload``); a server without them (Scribe itself) gets the call and no more, as
    scribe_ctrl does.
    """
    before = client.get_counters()
    client.reinitialize()
    if RELOADS not in before:
        return 0
    deadline = time.monotonic() + timeout
    while True:
        after = client.get_counters()
        if after.get(REINITIALIZE_REFUSED, 0) > before.get(REINITIALIZE_REFUSED, 0):
            click.echo(
                "reload refused: the server takes no fb303 reinitialize from clients "
                "(server.allow_remote_shutdown); send it SIGHUP on its host instead",
                err=True,
            )
            return 1
        if after.get(RELOADS, 0) > before[RELOADS]:
            break
        if time.monotonic() > deadline:
            click.echo(
                f"reload requested, but the server did not report it within {timeout}s", err=True
            )
            return 1
        time.sleep(0.05)
    if after.get(RELOAD_FAILURES, 0) == before.get(RELOAD_FAILURES, 0):
        return 0
    details = client.get_status_details().split("; ")
    failed = [d for d in details if d.startswith(FAILED_PREFIX)] or ["reload failed"]
    click.echo(failed[0], err=True)
    return 1
