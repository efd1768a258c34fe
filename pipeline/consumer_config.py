"""Configuration of consumer groups (``[[consumers]]``) and of coordination (``[coordination]``).

A group's table holds ``consumers.GroupConfig``'s keys plus one sink table::

    [[consumers]]
    name = "archive"
    categories = ["*"]
    sink = "files"
    [consumers.files]
    file_path = "var/files"
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Interval

from consumers import CassandraSinkConfig, FileSinkConfig, ForwardSinkConfig, GroupConfig
from consumers.coordination.zk_client import ZooKeeperConfig
from consumers.sinks.cassandra import BUILTINS, PluginError, build_plugin, is_plugin
from pipeline import settings
from pipeline.errors import ConfigError

DEFAULT_ZOOKEEPER_CHROOT = "/scribe-pipeline"

SINK_TABLES: dict[str, type[Any]] = {
    "files": FileSinkConfig,
    "forward": ForwardSinkConfig,
    "cassandra": CassandraSinkConfig,
}


class CoordinationKind(enum.Enum):
    LOCAL = "local"
    ZOOKEEPER = "zookeeper"


@dataclass(frozen=True)
class CoordinationConfig:
    """The ``[coordination]`` table: who decides partition ownership and keeps offsets."""

    # "local": file locks and offset files on this host (the embedded default);
    # "zookeeper": ZooKeeper, for members on several hosts (the production setting).
    kind: CoordinationKind = CoordinationKind.LOCAL
    # Local coordinator: where offsets, epochs and locks live.
    state_dir: Path = Path("var/consumers")
    # How often members look for partitions to take or give back (local), or re-check that
    # their ownership nodes and epochs are still theirs (ZooKeeper, which also reacts to watches).
    # From 10 ms (more often only burns CPU) to an hour (a dead member's partitions wait that).
    rescan_interval_s: Annotated[float, Interval(ge=0.01, le=3600)] = 1.0
    # A revoked partition's final commit may take this long before its lock is released anyway.
    revoke_timeout_s: Annotated[float, Interval(gt=0, le=3600)] = 30.0
    # ZooKeeper: assignment waits until membership has been stable this long, so that members
    # starting or stopping together cause one rebalance, not one per member.  A dead member's
    # partitions are consumed again within about session_timeout_s plus this.
    settle_s: Annotated[float, Interval(ge=0, le=3600)] = 1.0
    # ZooKeeper: a log server with a fetch port registers its journal and partitions; new
    # partitions are published at most this often (a burst of new categories is one write),
    # and ZooKeeper unreachable is retried this often.  From 10 ms to an hour.
    registry_interval_s: Annotated[float, Interval(ge=0.01, le=3600)] = 1.0
    # ZooKeeper: the ensemble and the root (chroot) under which groups keep their znodes.
    zookeeper: ZooKeeperConfig = field(
        default_factory=lambda: ZooKeeperConfig(chroot=DEFAULT_ZOOKEEPER_CHROOT)
    )


@dataclass(frozen=True)
class ConsumerSection:
    """One ``[[consumers]]`` table."""

    group: GroupConfig
    files: FileSinkConfig | None = None
    forward: ForwardSinkConfig | None = None
    cassandra: CassandraSinkConfig | None = None
    # ``pipeline run`` starts this group beside the server; false leaves it to ``pipeline consume``.
    embedded: bool = True

    @property
    def name(self) -> str:
        return self.group.name


def consumer_section(table: Any, key: str, base: Path | None = None) -> ConsumerSection:
    """One group's table; ``base`` is the directory relative paths in it resolve against."""
    if not isinstance(table, Mapping):
        raise ConfigError(key, "expected a table")
    group_keys = {f.name for f in dataclasses.fields(GroupConfig)}
    known = group_keys | set(SINK_TABLES) | {"embedded"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})")
    group = settings.build(GroupConfig, {k: v for k, v in table.items() if k in group_keys}, key)
    sinks: dict[str, Any] = {
        name: (
            cassandra_sink_config(table[name], f"{key}.{name}", base)
            if cls is CassandraSinkConfig
            else settings.build(cls, table[name], f"{key}.{name}")
        )
        for name, cls in SINK_TABLES.items()
        if name in table
    }
    if group.sink not in sinks:
        table_name = f"{key}.{group.sink}"
        raise ConfigError(table_name, f"sink {group.sink!r} needs its [{table_name}] table")
    embedded = settings.convert(bool, table.get("embedded", True), f"{key}.embedded")
    return ConsumerSection(group=group, embedded=embedded, **sinks)


def cassandra_sink_config(table: Any, key: str, base: Path | None = None) -> CassandraSinkConfig:
    """``[consumers.cassandra]``: ``materializer``, ``plugin_path`` and the materializer's own
    options, checked now (a plugin is imported and built once to check its options, so a
    relative ``plugin_path`` is resolved against ``base`` first)."""
    if not isinstance(table, Mapping):
        raise ConfigError(key, "expected a table")
    rest = dict(table)
    name = settings.convert(str, rest.pop("materializer", "events"), f"{key}.materializer")
    raw_path = rest.pop("plugin_path", None)
    plugin_path = (
        None if raw_path is None else settings.convert(Path, raw_path, f"{key}.plugin_path")
    )
    if plugin_path is not None and base is not None:
        plugin_path = settings.absolute(plugin_path, base)
    if is_plugin(name):
        try:
            build_plugin(name, rest, plugin_path)
        except PluginError as exc:
            raise ConfigError(f"{key}.materializer", str(exc)) from None
        return CassandraSinkConfig(name, rest, plugin_path)
    builtin = BUILTINS.get(name)
    if builtin is None:
        known = ", ".join(sorted(BUILTINS))
        raise ConfigError(
            f"{key}.materializer",
            f"unknown materializer {name!r} (built in: {known}; or a plugin's module:Class)",
        )
    return CassandraSinkConfig(name, settings.build(builtin[0], rest, key), plugin_path)


def consumer_sections(value: Any, base: Path | None = None) -> tuple[ConsumerSection, ...]:
    if not isinstance(value, list):
        raise ConfigError("consumers", "expected an array of tables ([[consumers]])")
    sections = tuple(consumer_section(t, f"consumers[{i}]", base) for i, t in enumerate(value))
    names = [s.name for s in sections]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("consumers", f"group {name!r} is configured twice")
    return sections
