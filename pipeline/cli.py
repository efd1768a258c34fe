"""The ``pipeline`` command: one entry point for the daemons and the operator tools.

Exit codes: 0 success; 1 a command's own failure (``journal verify`` found damage, ...);
2 usage errors (click); 78 (EX_CONFIG) invalid configuration; 70 (EX_SOFTWARE) a daemon could
not start.  ``cat`` and ``ctl`` keep scribe_cat's and scribe_ctrl's own codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import trio

from pipeline import __version__, logs
from pipeline import config as config_module
from pipeline.cli_bench import bench_group
from pipeline.cli_journal import journal_group
from pipeline.cli_tools import cat_command, ctl_command
from pipeline.config import PipelineConfig
from pipeline.daemon import run_until_signalled
from pipeline.errors import ConfigError, PipelineError, StartupError
from pipeline.services.cli import services

EXIT_CONFIG = 78
EXIT_STARTUP = 70

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="PIPELINE_CONFIG",
    help="TOML configuration file (conf/pipeline.toml is an annotated example).",
)


def load_config(config_path: Path | None, **flags: Any) -> PipelineConfig:
    """Configuration with flags over environment over file; exits 78 when invalid."""
    try:
        return config_module.load(config_path, overrides=config_module.flag_overrides(**flags))
    except ConfigError as exc:
        click.echo(f"pipeline: invalid configuration: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def run_daemon(config: PipelineConfig) -> None:
    logs.configure(config.log.level, config.log.format)
    try:
        trio.run(run_until_signalled, config)
    except StartupError as exc:
        click.echo(f"pipeline: cannot start: {exc}", err=True)
        sys.exit(EXIT_STARTUP)
    except PipelineError as exc:
        click.echo(f"pipeline: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["--help"]})
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """scribe-pipeline: a Scribe-compatible log server with a durable journal."""


@main.command()
@config_option
@click.option("--host", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 1463].")
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
    """Run the Scribe log server (SIGTERM drains; a second signal stops at once)."""
    config = load_config(
        config_path,
        server__host=host,
        server__port=port,
        journal__dir=journal_dir,
        journal__durability=durability,
        log__format=log_format,
    )
    run_daemon(config)


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the main job of the configuration: the log server (the embedded default)."""
    run_daemon(load_config(config_path))


main.add_command(cat_command)
main.add_command(ctl_command)
main.add_command(journal_group)
main.add_command(bench_group)
main.add_command(services)
