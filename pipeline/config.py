"""The pipeline's configuration: one TOML file, ``PIPELINE_...`` environment overrides, flags.

Precedence: command-line flags > environment > file > defaults.  Each component keeps its own
frozen dataclass (``scribe_compat.ServerConfig``, ``journal.JournalConfig``, ...); this module
only assembles them, so ``conf/pipeline.toml`` documents exactly the code's defaults (a test
checks that).

Relative paths, written in the file or left at their defaults, resolve against the directory of
the configuration file (the working directory when there is none): a daemon started by systemd
from ``/`` opens what its file says, not ``/var/journal``.  A path given by a flag
(``--journal-dir``) or an environment variable resolves against the working directory, as
anything typed in a shell does.  Every path in a loaded configuration is absolute, so logs
name the real place.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Interval

from consumers.cassandra import CassandraConfig
from journal import JournalConfig
from pipeline import settings
from pipeline.admission import AdmissionConfig
from pipeline.consumer_config import ConsumerSection, CoordinationConfig, consumer_sections
from pipeline.errors import ConfigError
from pipeline.fetch_service import FetchConfig
from pipeline.http.config import HttpConfig
from pipeline.log_service import Fb303Config
from pipeline.metrics.config import MetricsConfig
from pipeline.routing import RoutingConfig
from pipeline.services.config import ServicesConfig, services_config_from_mapping
from scribe_compat import ServerConfig


@dataclass(frozen=True)
class JournalSection:
    """The ``[journal]`` table: where the journal lives, and the journal's own settings."""

    dir: Path = Path("var/journal")
    # How often retention runs; it deletes whole segments only, so once a minute is plenty.
    # From a second (more often only burns CPU) to a day (so old segments do not pile up).
    retention_check_interval_s: Annotated[float, Interval(ge=1, le=86400)] = 60.0
    # Never delete what a registered consumer group has not committed (operators may turn off).
    retention_respects_consumers: bool = True
    # Descriptors kept free beyond the partition writers' files, for connections, recovery,
    # retention and readers: with fewer free, status is WARNING; a descriptor limit below
    # max_open_partitions x 3 + this refuses to start.  64 covers a burst of new connections and
    # a reopened partition or two while the server answers TRY_LATER instead of failing calls.
    # At most Linux's default ceiling for any process (nr_open, 1,048,576).
    min_free_descriptors: Annotated[int, Interval(ge=0, le=1 << 20)] = 64
    settings: JournalConfig = field(default_factory=JournalConfig)


@dataclass(frozen=True)
class LogConfig:
    """The ``[log]`` table."""

    level: str = "info"
    format: str = "logfmt"
    # Daemons log a status line (throughput, lag) this often: from every second (more would
    # drown the log) to daily.
    status_interval_s: Annotated[float, Interval(ge=1, le=86400)] = 60.0
    # Of each kind of warning (one call site: "call rejected", "protocol error"), this many
    # lines pass per window; the rest are counted and summed up in one line, so a client
    # cannot flood the log.  Five lines show a flood's pattern (peers, reasons).
    repeat_burst: Annotated[int, Ge(1)] = 5
    # How long a kind's budget lasts, and so how often at most its summary line comes (at
    # least hourly, so a flood is reported while it matters).
    repeat_window_s: Annotated[float, Interval(gt=0, le=3600)] = 10.0
    # Kinds tracked at once: some are keyed by client data (a category); past this many
    # they share their call site's budget, so the tracking's memory stays bounded.
    max_repeat_kinds: Annotated[int, Ge(1)] = 1024

    def __post_init__(self) -> None:
        if self.level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"level {self.level!r} is not debug, info, warning or error")
        if self.format not in ("logfmt", "json"):
            raise ValueError(f"format {self.format!r} is not logfmt or json")


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "scribe-pipeline"
    server: ServerConfig = field(default_factory=ServerConfig)
    journal: JournalSection = field(default_factory=JournalSection)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    log: LogConfig = field(default_factory=LogConfig)
    fb303: Fb303Config = field(default_factory=Fb303Config)
    # The fetch service (off unless ``fetch.port`` is set): consumers on other hosts read the
    # journal through it.
    fetch: FetchConfig = field(default_factory=FetchConfig)
    # The daemon's HTTP server (off unless ``http.port`` is set): /metrics, /healthz, /readyz.
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    # The Cassandra cluster every group with ``sink = "cassandra"`` writes to.
    cassandra: CassandraConfig = field(default_factory=CassandraConfig)
    consumers: tuple[ConsumerSection, ...] = ()
    # The file the configuration came from (absolute), which a reload reads again.  Relative
    # paths in it resolve against its directory.
    source: Path | None = None

    def group(self, name: str) -> ConsumerSection:
        for section in self.consumers:
            if section.name == name:
                return section
        known = ", ".join(s.name for s in self.consumers) or "none configured"
        raise ConfigError("consumers", f"no consumer group {name!r} (known: {known})")


_JOURNAL_OWN_KEYS = {f.name for f in dataclasses.fields(JournalSection) if f.name != "settings"}


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> PipelineConfig:
    """Build and validate the whole configuration from TOML-shaped data read from ``source``
    (relative paths resolve against its directory, or the working directory without one)."""
    data = dict(data)
    source = None if source is None else settings.absolute(source, Path.cwd())
    base = Path.cwd() if source is None else source.parent
    known = {f.name for f in dataclasses.fields(PipelineConfig) if f.name != "source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown section (known: {', '.join(sorted(known))})")
    parts: dict[str, Any] = {}
    if "name" in data:
        parts["name"] = settings.convert(str, data["name"], "name")
    for key, cls in (
        ("server", ServerConfig),
        ("admission", AdmissionConfig),
        ("routing", RoutingConfig),
        ("log", LogConfig),
        ("fb303", Fb303Config),
        ("fetch", FetchConfig),
        ("http", HttpConfig),
        ("metrics", MetricsConfig),
        ("coordination", CoordinationConfig),
        ("cassandra", CassandraConfig),
    ):
        if key in data:
            parts[key] = settings.build(cls, data[key], key)
    if "journal" in data:
        parts["journal"] = _journal_section(data["journal"])
    if "consumers" in data:
        parts["consumers"] = consumer_sections(data["consumers"], base)
    if "services" in data:
        parts["services"] = services_config_from_mapping(data["services"])
    return settings.resolve_paths(PipelineConfig(source=source, **parts), base)


def _journal_section(table: Any) -> JournalSection:
    if not isinstance(table, Mapping):
        raise ConfigError("journal", "expected a table")
    own = {k: v for k, v in table.items() if k in _JOURNAL_OWN_KEYS}
    rest = {k: v for k, v in table.items() if k not in _JOURNAL_OWN_KEYS}
    section = settings.build(JournalSection, own, "journal")
    journal_settings = settings.build(JournalConfig, rest, "journal")
    return dataclasses.replace(section, settings=journal_settings)


def read_file(path: Path) -> dict[str, Any]:
    return settings.read_toml(path)


def load(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """File, then environment, then ``overrides`` (the command line's flags, as nested tables,
    see ``flag_overrides``); relative paths resolved as the module's docstring says."""
    environ = os.environ if environ is None else environ
    source = None if path is None else settings.absolute(path, Path.cwd())
    data: dict[str, Any] = read_file(source) if source is not None else {}
    data = settings.merge(data, settings.env_overrides(environ))
    # Where each key not from the file was set, for errors to say (flags win over variables).
    sources = {
        key: f"environment variable {name}" for key, name in settings.env_variables(environ).items()
    }
    if overrides:
        data = settings.merge(data, overrides)
        sources.update(dict.fromkeys(_dotted_keys(overrides), "the command line"))
    try:
        return from_mapping(data, source=source)
    except ConfigError as exc:
        blamed = settings.blamed_source(exc.key, sources) if exc.source is None else None
        if blamed is None:
            raise
        raise ConfigError(exc.key, exc.problem, blamed) from exc


def _dotted_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name, value in tree.items():
        key = f"{prefix}.{name}" if prefix else name
        keys += _dotted_keys(value, key) if isinstance(value, Mapping) else [key]
    return keys


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Nested tables from ``section__key=value`` flags whose value is not None."""
    tree: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        node = tree
        *sections, key = name.split("__")
        for section in sections:
            node = node.setdefault(section, {})
        # A path typed on the command line means the working directory's, not the file's.
        node[key] = settings.WorkingDirectoryText(value) if isinstance(value, Path) else value
    return tree
