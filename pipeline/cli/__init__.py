"""The ``pipeline`` command: one entry point for the daemons and the operator tools.

The convention every command follows, and the exit codes, are in ``pipeline.cli.common``.
"""

from __future__ import annotations

import click

from pipeline import __version__
from pipeline.cli.bench import bench_group
from pipeline.cli.cassandra import deadletters_group, events_command, schema_group
from pipeline.cli.cluster import cluster_group
from pipeline.cli.common import EXIT_CODES, HELP_OPTION_NAMES
from pipeline.cli.config import config_group
from pipeline.cli.journal import journal_group
from pipeline.cli.offsets import offsets_group, replay_command
from pipeline.cli.serve import consume, run, serve
from pipeline.cli.services import services
from pipeline.cli.tools import cat_command, ctl_command

__all__ = ["main"]


def _exit_codes_epilog() -> str:
    # "\b" keeps click from rewrapping the table.
    rows = "\n".join(f"  {code:<5} {meaning}" for code, meaning in EXIT_CODES)
    return f"\b\nExit codes:\n{rows}"


@click.group(context_settings={"help_option_names": HELP_OPTION_NAMES}, epilog=_exit_codes_epilog())
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """scribe-pipeline: a Scribe-compatible log server with a durable journal.

    Every command takes -h/--help (cat: --help, -h is scribe_cat's host).  The same flag means
    the same everywhere: -c category, -p partition, -g group, -t target server host[:port],
    -d duration, --config file, --journal-dir, --json for machines.
    """


main.add_command(serve)
main.add_command(run)
main.add_command(consume)
main.add_command(cat_command)
main.add_command(ctl_command)
main.add_command(journal_group)
journal_group.add_command(replay_command)
main.add_command(offsets_group)
main.add_command(cluster_group)
main.add_command(bench_group)
main.add_command(services)
main.add_command(schema_group)
main.add_command(deadletters_group)
main.add_command(events_command)
main.add_command(config_group)


def _help_names_everywhere(command: click.Command) -> None:
    """``-h``/``--help`` on every command itself, not only through the root's context, so a
    command invoked on its own (as tests do) answers ``-h`` too; ``cat`` keeps its own."""
    command.context_settings.setdefault("help_option_names", HELP_OPTION_NAMES)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _help_names_everywhere(sub)


_help_names_everywhere(main)
