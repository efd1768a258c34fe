"""``pipeline serve``, ``pipeline run`` and ``pipeline consume``: the daemons."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import trio

from pipeline import logs
from pipeline.cli.common import (
    EXIT_CONFIG,
    EXIT_STARTUP,
    config_option,
    group_section,
    load_config,
)
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError, PipelineError, StartupError, find_error
from pipeline.services.required import start_required_services
from pipeline.supervisor import run_until_signalled


def run_daemon(
    config: PipelineConfig, *, server: bool = True, groups: Sequence[ConsumerSection] = ()
) -> None:
    logs.configure(
        config.log.level,
        config.log.format,
        repeat_burst=config.log.repeat_burst,
        repeat_window_s=config.log.repeat_window_s,
        max_repeat_kinds=config.log.max_repeat_kinds,
    )
    try:
        trio.run(functools.partial(run_until_signalled, config, server=server, groups=groups))
    except (PipelineError, BaseExceptionGroup) as exc:
        error = find_error(exc, PipelineError)
        if error is None:
            raise
        if isinstance(error, StartupError):
            click.echo(f"pipeline: cannot start: {error}", err=True)
            sys.exit(EXIT_STARTUP)
        if isinstance(error, ConfigError):
            # Found only once running: a consumer group's tables do not fit its configuration.
            click.echo(f"pipeline: invalid configuration: {error}", err=True)
            sys.exit(EXIT_CONFIG)
        click.echo(f"pipeline: {error}", err=True)
        sys.exit(1)


@click.command()
@config_option
@click.option("--host", help="Address to listen on [default: 127.0.0.1].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on, 0 for any free one [default: 1463].",
)
@click.option(
    "--journal-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Journal directory [default: var/journal].",
)
@click.option(
    "--durability",
    type=click.Choice(["fsync", "interval", "none"]),
    help="When Log answers OK: after fsync (default), after a write (periodic fsync), or never.",
)
@click.option("--log-format", type=click.Choice(["logfmt", "json"]), help="Log line format.")
def serve(
    config_path: Path | None,
    host: str | None,
    port: int | None,
    journal_dir: Path | None,
    durability: str | None,
    log_format: str | None,
) -> None:
    """Run the Scribe log server (SIGTERM drains, a second signal stops at once; SIGHUP
    reloads the configuration file, as "pipeline ctl reload" does)."""
    config = load_config(
        config_path,
        server__host=host,
        server__port=port,
        journal__dir=journal_dir,
        journal__durability=durability,
        log__format=log_format,
    )
    run_daemon(config)


@click.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the log server and every embedded consumer group in one process.

    Local ZooKeeper and Cassandra are started first when the configuration uses them
    (``pipeline services stop`` stops them).  SIGHUP reloads the server's configuration (the
    consumer groups change on restart).
    """
    config = load_config(config_path)
    try:
        start_required_services(config, lambda message: click.echo(message, err=True))
    except PipelineError as exc:
        click.echo(f"pipeline: cannot start services: {exc}", err=True)
        sys.exit(EXIT_STARTUP)
    run_daemon(config, groups=[g for g in config.consumers if g.embedded])


@click.command()
@config_option
@click.option("--group", "-g", "group_name", required=True, help="The consumer group to join.")
def consume(config_path: Path | None, group_name: str) -> None:
    """Run one member of a consumer group (several may run at once, on any host).

    SIGHUP is ignored (logged): a member takes a new configuration when restarted.
    """
    config = load_config(config_path)
    run_daemon(config, server=False, groups=[group_section(config, group_name)])
