"""What every ``pipeline`` command shares: the ``--config`` option, loading, exit codes."""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pipeline import config as config_module
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError

EXIT_CONFIG = 78  # EX_CONFIG: invalid configuration
EXIT_STARTUP = 70  # EX_SOFTWARE: a daemon could not start

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


def group_section(config: PipelineConfig, name: str) -> ConsumerSection:
    """The configured consumer group ``name``; exits 78 naming the known groups otherwise."""
    try:
        return config.group(name)
    except ConfigError as exc:
        click.echo(f"pipeline: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


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
