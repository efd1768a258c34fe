"""The ``pipeline`` command: one entry point for the daemons and the operator tools.

Exit codes: 0 success; 1 a command's own failure (``journal verify`` found damage, ...);
2 usage errors (click); 78 (EX_CONFIG) invalid configuration; 70 (EX_SOFTWARE) a daemon could
not start.  ``cat`` and ``ctl`` keep scribe_cat's and scribe_ctrl's own codes.
"""

from __future__ import annotations

import click

from pipeline import __version__
from pipeline.cli.bench import bench_group
from pipeline.cli.cassandra import deadletters_group, events_command, schema_group
from pipeline.cli.journal import journal_group
from pipeline.cli.offsets import offsets_group, replay_command
from pipeline.cli.serve import consume, run, serve
from pipeline.cli.tools import cat_command, ctl_command
from pipeline.services.cli import services

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["--help"]})
@click.version_option(__version__, prog_name="pipeline")
def main() -> None:
    """scribe-pipeline: a Scribe-compatible log server with a durable journal."""


main.add_command(serve)
main.add_command(run)
main.add_command(consume)
main.add_command(cat_command)
main.add_command(ctl_command)
main.add_command(journal_group)
journal_group.add_command(replay_command)
main.add_command(offsets_group)
main.add_command(bench_group)
main.add_command(services)
main.add_command(schema_group)
main.add_command(deadletters_group)
main.add_command(events_command)
