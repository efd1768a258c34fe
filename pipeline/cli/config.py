"""``pipeline config``: check a configuration without starting anything; import a scribe.conf.

``config check`` loads a configuration as a daemon would (file, ``PIPELINE_...`` variables)
and prints one line, or exits 78 naming the key and the problem.  It does not look at the
machine (whether ``journal.dir`` exists, whether a port is free): that is the daemon's start.

``config import-scribe SCRIBE_CONF`` prints the equivalent pipeline configuration on standard
output and, on standard error, one line for every Scribe key: ``mapped to X``, ``ignored: why``
or ``unsupported: why``.  Exit codes: 0 when everything is honoured (some keys may be
unsupported where only a file layout differs, never where messages go), 1 when something
cannot be honoured safely (the configuration is still printed, without what it cannot do),
2 when the scribe.conf itself is malformed (the line is named).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click

from pipeline import config as config_module
from pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandError,
    InvalidConfigError,
    config_option,
    json_option,
    load_config,
)
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.scribe_conf import ScribeSyntaxError, dumps, import_scribe, parse_bytes


class ScribeConfUsageError(CommandError):
    """The scribe.conf given cannot be read as a scribe.conf: exit 2, naming the line."""

    exit_code = EXIT_USAGE


class CannotHonourError(CommandError):
    """Some of the scribe.conf cannot be honoured safely: exit 1."""

    exit_code = EXIT_FAILED


@click.group("config")
def config_group() -> None:
    """Check a configuration, or import one from Scribe's scribe.conf."""


@config_group.command("check")
@config_option
@json_option("One JSON object instead of the summary line.")
def check_command(config_path: Path | None, as_json: bool) -> None:
    """Load a configuration (file and PIPELINE_... variables) without starting anything.

    Exit 0 with a one-line summary, or 78 naming the key and the problem.
    """
    config = load_config(config_path)
    summary = _summary(config)
    if as_json:
        click.echo(json.dumps(summary))
        return
    groups = ", ".join(f"{g['name']} ({g['sink']})" for g in summary["groups"]) or "none"
    routes = ", ".join(summary["routes"]) or "none"
    click.echo(
        f"{summary['source'] or 'defaults'}: valid; server {summary['server']}, journal "
        f"{summary['journal']}, routes: {routes}; consumer groups: {groups}"
    )


def _summary(config: PipelineConfig) -> dict[str, Any]:
    return {
        "valid": True,
        "source": None if config.source is None else str(config.source),
        "server": f"{config.server.host}:{config.server.port}",
        "journal": str(config.journal.dir),
        "routes": [
            r.category if r.target is None else f"{r.category}->{r.target}"
            for r in config.routing.routes
        ],
        "groups": [{"name": s.name, "sink": s.group.sink} for s in config.consumers],
    }


@config_group.command("import-scribe")
@click.argument(
    "scribe_conf", type=click.Path(path_type=Path, dir_okay=False, exists=True, readable=True)
)
def import_scribe_command(scribe_conf: Path) -> None:
    """Print the pipeline configuration equivalent to SCRIBE_CONF (TOML, on standard output).

    Standard error gets one line per Scribe key: mapped to what, ignored and why, or
    unsupported and why.  Exit 1 when something cannot be honoured safely (the configuration
    is printed without it), 2 when SCRIBE_CONF is malformed (naming the line).
    """
    try:
        root = parse_bytes(scribe_conf.read_bytes())
        imported = import_scribe(root, scribe_conf.name)
    except ScribeSyntaxError as exc:
        raise ScribeConfUsageError(f"{scribe_conf}: {exc}") from None
    except OSError as exc:
        raise CommandError(f"{scribe_conf}: {exc.strerror}") from None
    text = dumps(imported.tree)
    try:
        config_module.from_mapping(tomllib.loads(text))
    except ConfigError as exc:
        # The mapping checks every value it writes, so this is the importer's own mistake.
        raise InvalidConfigError(f"the imported configuration does not load: {exc}") from exc
    for line in imported.report.lines():
        click.echo(f"{scribe_conf.name}: {line}", err=True)
    click.echo(text, nl=False)
    if imported.report.cannot_honour:
        fatal = sum(e.fatal for e in imported.report.entries.values())
        raise CannotHonourError(
            f"{fatal} Scribe setting(s) cannot be honoured safely (marked unsupported above); "
            "the configuration printed does not do what they asked"
        )
