"""`pipeline services start|status|stop`: the local ZooKeeper and Cassandra.

Exit codes: 0 done; 2 invalid configuration or usage; 3 a service could not be fetched,
started or stopped (the message names it and the log's last lines follow on stderr).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pipeline.errors import ConfigError, PipelineError
from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.config import ServicesConfig, services_config_from_mapping
from pipeline.services.process import ManagedService, ServiceError
from pipeline.services.zookeeper import ManagedZooKeeper
from pipeline.settings import absolute, env_overrides, merge, read_toml, resolve_paths

__all__ = ["EXIT_CONFIG", "EXIT_SERVICE", "load_services_config", "services"]

EXIT_CONFIG = 2
EXIT_SERVICE = 3

SERVICE_NAMES = ("zookeeper", "cassandra")


def load_services_config(
    path: Path | None, environ: dict[str, str] | None = None
) -> ServicesConfig:
    """Defaults, then the ``[services]`` table of ``path``, then ``PIPELINE_SERVICES__...``.

    Relative directories resolve as in every configuration (``pipeline.config``): against the
    file's directory, or the working directory for environment values and without a file.
    """
    data: dict[str, Any] = {}
    source = None if path is None else absolute(path, Path.cwd())
    if source is not None:
        table = read_toml(source).get("services", {})
        if not isinstance(table, dict):
            raise ConfigError("services", "expected a table")
        data = table
    env = env_overrides(os.environ if environ is None else environ).get("services", {})
    if env:
        data = merge(data, env)
    config = services_config_from_mapping(data)
    return resolve_paths(config, Path.cwd() if source is None else source.parent)


def _managed(config: ServicesConfig, only: str | None) -> list[tuple[ManagedService, bool]]:
    """The services in start order, each with whether it is enabled."""
    chosen: list[tuple[ManagedService, bool]] = []
    if only in (None, "zookeeper"):
        chosen.append((ManagedZooKeeper(config), config.zookeeper.enabled))
    if only in (None, "cassandra"):
        chosen.append((ManagedCassandra(config), config.cassandra.enabled))
    return chosen


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _fail(exc: PipelineError) -> None:
    click.echo(f"error: {exc}", err=True)
    if isinstance(exc, ServiceError) and exc.log_tail:
        for line in exc.log_tail:
            click.echo(f"  {line}", err=True)
    raise SystemExit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_SERVICE)


def _load(config_path: Path | None) -> ServicesConfig:
    try:
        return load_services_config(config_path)
    except ConfigError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The pipeline's TOML file; its [services] table applies.",
)
only_option = click.option(
    "--only", type=click.Choice(SERVICE_NAMES), default=None, help="Just this service."
)


@click.group()
def services() -> None:
    """Run the local ZooKeeper and Cassandra (data and logs under var/)."""


@services.command()
@only_option
@config_option
def start(only: str | None, config_path: Path | None) -> None:
    """Fetch (once), start and wait until ready; reuse servers already running."""
    config = _load(config_path)
    for service, enabled in _managed(config, only):
        if not enabled and only is None:
            continue
        timeout = (
            config.zookeeper.start_timeout_s
            if service.name == "zookeeper"
            else config.cassandra.start_timeout_s
        )
        try:
            result = service.start(_progress, timeout)
        except PipelineError as exc:
            _fail(exc)
        if result.started:
            rss = f", RSS {result.rss_kib // 1024} MiB" if result.rss_kib else ""
            click.echo(
                f"{result.name}: ready on {result.address} in {result.seconds:.1f} s "
                f"(pid {result.pid}{rss})"
            )
        elif result.pid is not None:
            click.echo(f"{result.name}: already running on {result.address} (pid {result.pid})")
        else:
            click.echo(f"{result.name}: already answering on {result.address} (not ours to stop)")


@services.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@only_option
@config_option
def status(as_json: bool, only: str | None, config_path: Path | None) -> None:
    """Show whether each service answers, and the pid of the one we started."""
    config = _load(config_path)
    states = [service.status(enabled) for service, enabled in _managed(config, only)]
    if as_json:
        click.echo(json.dumps({s.name: s.as_json() for s in states}, sort_keys=True))
        return
    for s in states:
        state = "running" if s.running else "stopped"
        owner = f" (pid {s.pid})" if s.pid else (" (not started by pipeline)" if s.running else "")
        disabled = "" if s.enabled else " [disabled]"
        click.echo(f"{s.name}: {state} on {s.host}:{s.port}{owner}{disabled}")


@services.command()
@only_option
@config_option
def stop(only: str | None, config_path: Path | None) -> None:
    """Stop the servers that `start` started (by pid) and wait for them to exit."""
    config = _load(config_path)
    failed: list[ServiceError] = []
    for service, _enabled in reversed(_managed(config, only)):
        try:
            stopped = service.stop(_progress)
        except ServiceError as exc:
            failed.append(exc)
            continue
        click.echo(f"{service.name}: {'stopped' if stopped else 'not running (nothing to stop)'}")
    if failed:
        _fail(failed[0])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the group on its own (before it is registered in `pipeline`)."""
    services.main(
        args=list(argv) if argv is not None else sys.argv[1:], prog_name="pipeline services"
    )
