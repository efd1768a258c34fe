"""``pipeline serve``, ``pipeline run`` and ``pipeline consume``: the daemons."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import click
import trio

from pipeline import logs
from pipeline.cli.common import (
    FC,
    CannotStartError,
    CommandError,
    InvalidConfigError,
    config_option,
    group_section,
    journal_dir_option,
    load_config,
    log_options,
)
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError, PipelineError, StartupError, find_error
from pipeline.services.required import start_required_services
from pipeline.supervisor import run_until_signalled

Flag = str | int | Path | None  # a value of `server_options`, None when not given


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
            raise CannotStartError(str(error)) from exc
        if isinstance(error, ConfigError):
            # Found only once running: a consumer group's tables do not fit its configuration.
            raise InvalidConfigError(str(error)) from exc
        raise CommandError(str(error)) from exc


def server_options(command: FC) -> FC:
    """What the log server's daemons take on top of the configuration file."""
    for option in reversed(
        (
            config_option,
            click.option("--host", help="Address to listen on [default: 127.0.0.1]."),
            click.option(
                "--port",
                type=click.IntRange(0, 65535),
                help="Port to listen on, 0 for any free one [default: 1463].",
            ),
            journal_dir_option,
            click.option(
                "--durability",
                type=click.Choice(["fsync", "interval", "none"]),
                help="When Log answers OK: after fsync (default), after a write (periodic "
                "fsync), or never.",
            ),
            log_options,
        )
    ):
        command = option(command)
    return command


def load_server_config(config_path: Path | None, **flags: Flag) -> PipelineConfig:
    """The configuration with ``server_options``' flags over it."""
    return load_config(
        config_path,
        server__host=flags["host"],
        server__port=flags["port"],
        journal__dir=flags["journal_dir"],
        journal__durability=flags["durability"],
        log__level=flags["log_level"],
        log__format=flags["log_format"],
    )


@click.command()
@server_options
def serve(config_path: Path | None, **flags: Flag) -> None:
    """Run the Scribe log server (SIGTERM drains, a second signal stops at once; SIGHUP
    reloads the configuration file, as "pipeline ctl reload" does)."""
    run_daemon(load_server_config(config_path, **flags))


@click.command()
@server_options
def run(config_path: Path | None, **flags: Flag) -> None:
    """Run the log server and every embedded consumer group in one process.

    Local ZooKeeper and Cassandra are started first when the configuration uses them
    (``pipeline services stop`` stops them).  SIGHUP reloads the server's configuration (the
    consumer groups change on restart).
    """
    config = load_server_config(config_path, **flags)
    try:
        start_required_services(config, lambda message: click.echo(message, err=True))
    except PipelineError as exc:
        raise CannotStartError(f"services: {exc}") from exc
    run_daemon(config, groups=[g for g in config.consumers if g.embedded])


@click.command()
@config_option
@click.option("--group", "-g", "group_name", required=True, help="The consumer group to join.")
@journal_dir_option
@log_options
def consume(
    config_path: Path | None,
    group_name: str,
    journal_dir: Path | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run one member of a consumer group (several may run at once, on any host).

    SIGHUP is ignored (logged): a member takes a new configuration when restarted.
    """
    config = load_config(
        config_path, journal__dir=journal_dir, log__level=log_level, log__format=log_format
    )
    run_daemon(config, server=False, groups=[group_section(config, group_name)])
