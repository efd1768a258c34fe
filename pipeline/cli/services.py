"""``pipeline services start|status|stop``: the local ZooKeeper and Cassandra (a standalone
server each, or an ensemble and a cluster: ``--only S --member N`` picks one of their members).

Exit codes as every command's: 78 invalid configuration; 70 a service could not be fetched,
started or stopped (the message names it, and the last lines of its log follow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click

from pipeline.cli.common import (
    EXIT_STARTUP,
    CommandError,
    InvalidConfigError,
    config_option,
    json_option,
)
from pipeline.errors import ConfigError, PipelineError
from pipeline.services.config import ServicesConfig, load_services_config
from pipeline.services.members import (
    SERVICE_NAMES,
    is_enabled,
    members,
    start_members,
    start_timeout_s,
)
from pipeline.services.process import ManagedService, ServiceError, ServiceStatus

__all__ = ["services"]


class ServiceFailedError(CommandError):
    """A local service could not be fetched, started or stopped: exit 70."""

    exit_code = EXIT_STARTUP


def _managed(
    config: ServicesConfig, only: str | None, member: int | None = None
) -> list[tuple[str, list[ManagedService], bool]]:
    """The services in start order: each with its members and whether it is enabled."""
    if member is not None and only is None:
        raise click.UsageError("--member needs --only (which service's member)")
    chosen = []
    for name in SERVICE_NAMES:
        if only in (None, name):
            try:
                servers = members(config, name, member)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            chosen.append((name, servers, is_enabled(config, name)))
    return chosen


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _fail(exc: PipelineError) -> NoReturn:
    if isinstance(exc, ConfigError):
        raise InvalidConfigError(str(exc)) from exc
    tail = exc.log_tail if isinstance(exc, ServiceError) else ()
    raise ServiceFailedError("".join([str(exc), *(f"\n  {line}" for line in tail)])) from exc


def _load(config_path: Path | None) -> ServicesConfig:
    try:
        return load_services_config(config_path)
    except ConfigError as exc:
        _fail(exc)


only_option = click.option(
    "--only", type=click.Choice(SERVICE_NAMES), default=None, help="Just this service."
)
member_option = click.option(
    "--member",
    type=click.IntRange(min=1),
    default=None,
    help="Just this member (from 1) of --only's ensemble or cluster.",
)


@click.group()
def services() -> None:
    """Run the local ZooKeeper and Cassandra (data and logs under var/)."""


@services.command()
@only_option
@member_option
@config_option
def start(only: str | None, member: int | None, config_path: Path | None) -> None:
    """Fetch (once), start and wait until ready; reuse servers already running."""
    config = _load(config_path)
    for name, servers, enabled in _managed(config, only, member):
        if not enabled and only is None:
            continue
        try:
            results = start_members(servers, _progress, start_timeout_s(config, name))
        except PipelineError as exc:
            _fail(exc)
        for result in results:
            if result.started:
                rss = f", RSS {result.rss_kib // 1024} MiB" if result.rss_kib else ""
                click.echo(
                    f"{result.name}: ready on {result.address} in {result.seconds:.1f} s "
                    f"(pid {result.pid}{rss})"
                )
            elif result.pid is not None:
                click.echo(f"{result.name}: already running on {result.address} (pid {result.pid})")
            else:
                click.echo(
                    f"{result.name}: already answering on {result.address} (not ours to stop)"
                )


def _status_json(states: list[ServiceStatus], enabled: bool) -> dict[str, object]:
    """The first member's fields (a standalone server's), running only when every member is,
    and each member's own under "members"."""
    entry = states[0].as_json()
    entry["enabled"] = enabled
    entry["running"] = all(s.running for s in states)
    entry["members"] = [s.as_json() | {"name": s.name} for s in states]
    return entry


def _status_line(s: ServiceStatus) -> str:
    state = "running" if s.running else "stopped"
    owner = f" (pid {s.pid})" if s.pid else (" (not started by pipeline)" if s.running else "")
    disabled = "" if s.enabled else " [disabled]"
    return f"{s.name}: {state} on {s.host}:{s.port}{owner}{disabled}"


@services.command()
@json_option("One JSON object on stdout.")
@only_option
@member_option
@config_option
def status(as_json: bool, only: str | None, member: int | None, config_path: Path | None) -> None:
    """Show whether each service (each member) answers, and the pid of the one we started."""
    config = _load(config_path)
    report = {
        name: (enabled, [server.status(enabled) for server in servers])
        for name, servers, enabled in _managed(config, only, member)
    }
    if as_json:
        output = {name: _status_json(states, enabled) for name, (enabled, states) in report.items()}
        click.echo(json.dumps(output, sort_keys=True))
        return
    for name, (_enabled, states) in report.items():
        if len(states) == 1:
            click.echo(_status_line(states[0]))
            continue
        running = sum(s.running for s in states)
        click.echo(f"{name}: {running} of {len(states)} members running")
        for s in states:
            click.echo(f"  {_status_line(s)}")


@services.command()
@only_option
@member_option
@config_option
def stop(only: str | None, member: int | None, config_path: Path | None) -> None:
    """Stop the servers that `start` started (by pid) and wait for them to exit."""
    config = _load(config_path)
    failed: list[ServiceError] = []
    for _name, servers, _enabled in reversed(_managed(config, only, member)):
        for server in reversed(servers):
            try:
                stopped = server.stop(_progress)
            except ServiceError as exc:
                failed.append(exc)
                continue
            click.echo(
                f"{server.label}: {'stopped' if stopped else 'not running (nothing to stop)'}"
            )
    if failed:
        _fail(failed[0])
