"""Every numeric key of every configuration table, generated from the dataclasses: NaN, the
infinities and values outside the declared range are refused with an error naming the key, and
every value the loader accepts lets the components it configures be built and used.

The keys come from walking the dataclass tree from ``PipelineConfig`` (plus the built-in
materializers' options, which a group's ``[consumers.cassandra]`` table holds); only the TOML
shape is written here: which tables are flattened into their parent, and the few required keys
an array or sink table needs to exist at all.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consumers import CassandraSinkConfig
from consumers.sinks import FileSink, ForwardSink
from consumers.sinks.cassandra import BUILTINS
from pipeline import settings
from pipeline.admission import Admission, Refusal
from pipeline.config import JournalSection, PipelineConfig, from_mapping
from pipeline.consumer_app import build_coordinator
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError
from pipeline.log_service import LogService, remote_shutdown_allowed
from pipeline.logs import RepeatFilter
from pipeline.routing import Router
from scribe_compat import LogBatch, LogEntry, ServerConnection

# Tables whose keys sit in the parent table in TOML: [journal] holds JournalSection's own keys
# and JournalConfig's; a [[consumers]] table holds GroupConfig's keys beside its sink tables.
FLATTENED = {(JournalSection, "settings"), (ConsumerSection, "group")}
SINK_TABLES = {
    "files": {"file_path": "var/files"},
    "forward": {"host": "127.0.0.1"},
}
MATERIALIZER_TABLES = {
    "events": {},
    "latest": {"key_delimiter": ":"},
    "mapping": {"table": "t", "columns": {"c": "@message"}},
}


@dataclass(frozen=True)
class NumericKey:
    key: str  # the dotted key, as errors name it
    path: tuple[str | int, ...]  # where the value goes in the TOML document
    owner: str
    kind: type  # int or float
    bounds: dict[str, Any]
    base: dict[str, Any]  # the smallest document in which the key's table exists


def _numeric(hint: Any) -> tuple[type, dict[str, Any]] | None:
    """(int or float, declared bounds) when ``hint`` is a number, optional or annotated."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) != 1:
            return None
        hint = options[0]
    bounds: dict[str, Any] = {}
    if typing.get_origin(hint) is typing.Annotated:
        hint, *metadata = typing.get_args(hint)
        bounds = settings.bounds_of(metadata)
    return (hint, bounds) if hint in (int, float) else None


def _dataclass_in(hint: Any) -> tuple[type, bool] | None:
    """(the dataclass, whether it is an array of tables) for ``X``, ``X | None`` and
    ``tuple[X, ...]``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else None
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return (item, True) if dataclasses.is_dataclass(item) else None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint, False
    return None


def _walk(cls: type, path: tuple[str | int, ...], base: dict[str, Any]) -> Iterator[NumericKey]:
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "source":
            continue
        hint = hints[f.name]
        if (number := _numeric(hint)) is not None:
            kind, bounds = number
            steps = (*path, f.name)
            yield NumericKey(_key_of(steps), steps, cls.__name__, kind, bounds, base)
        elif cls is CassandraSinkConfig and f.name == "options":
            for name, (options_cls, _) in BUILTINS.items():
                table = {"materializer": name, **MATERIALIZER_TABLES[name]}
                yield from _walk(options_cls, path, _consumer_base("cassandra", table))
        elif (inner := _dataclass_in(hint)) is not None:
            inner_cls, array = inner
            if (cls, f.name) in FLATTENED:
                yield from _walk(inner_cls, path, base)
            elif f.name in SINK_TABLES:
                yield from _walk(inner_cls, (*path, f.name), _consumer_base(f.name))
            elif f.name == "cassandra" and cls is ConsumerSection:
                yield from _walk(inner_cls, (*path, f.name), _consumer_base("cassandra", {}))
            elif array:
                yield from _walk(inner_cls, (*path, f.name, 0), _array_base(path, f.name))
            else:
                yield from _walk(inner_cls, (*path, f.name), base)


def _key_of(steps: tuple[str | int, ...]) -> str:
    """The dotted key errors name: ``consumers[0].files.max_size``."""
    key = ""
    for step in steps:
        key += f"[{step}]" if isinstance(step, int) else f".{step}" if key else step
    return key


def _consumer_base(sink: str, table: dict[str, Any] | None = None) -> dict[str, Any]:
    sink_table = SINK_TABLES[sink] if table is None else table
    return {"consumers": [{"name": "g", "sink": sink, sink: dict(sink_table)}]}


def _array_base(path: tuple[str | int, ...], name: str) -> dict[str, Any]:
    if name == "consumers":
        return _consumer_base("files")
    assert (*path, name) == ("routing", "routes"), f"no base document for {path} {name}"
    return {"routing": {"routes": [{"category": "default"}]}}


KEYS = list(_walk(PipelineConfig, (), {}))


def document(numeric: NumericKey, value: Any) -> dict[str, Any]:
    doc = _copy(numeric.base)
    node: Any = doc
    for step, following in zip(numeric.path, numeric.path[1:], strict=False):
        if isinstance(step, int):
            node = node[step]
        else:
            node = node.setdefault(step, [{}] if isinstance(following, int) else {})
    node[numeric.path[-1]] = value
    return doc


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def refused_values(numeric: NumericKey) -> list[Any]:
    values: list[Any] = [math.nan, math.inf, -math.inf, -1]
    step = 1 if numeric.kind is int else None
    for name, limit in numeric.bounds.items():
        nudge = step or max(abs(limit), 1) * 1e-3
        values.append({"gt": limit, "ge": limit - nudge, "lt": limit, "le": limit + nudge}[name])
    return [v for v in values if not (isinstance(v, float) and v.is_integer() and step)]


def accepted_values(numeric: NumericKey) -> list[Any]:
    values: list[Any] = []
    step = 1 if numeric.kind is int else None
    for name, limit in numeric.bounds.items():
        nudge = step or max(abs(limit), 1) * 1e-3
        values.append({"gt": limit + nudge, "ge": limit, "lt": limit - nudge, "le": limit}[name])
    return values


def test_the_walk_finds_every_section() -> None:
    tables = {k.key.split(".")[0].split("[")[0] for k in KEYS}
    assert tables >= {"server", "journal", "admission", "routing", "log", "fb303", "services"}
    assert tables >= {"coordination", "cassandra", "consumers"}
    assert len(KEYS) > 60, [k.key for k in KEYS]
    assert "admission.rate_burst_s" in {k.key for k in KEYS}
    assert "consumers[0].cassandra.bucket_s" in {k.key for k in KEYS}
    assert "routing.routes[0].partitions" in {k.key for k in KEYS}


def test_every_numeric_key_declares_its_range() -> None:
    undeclared = [k.key for k in KEYS if not k.bounds]
    assert undeclared == []


@pytest.mark.parametrize(
    ("numeric", "value"),
    [(k, v) for k in KEYS for v in refused_values(k)],
    ids=lambda x: x.key if isinstance(x, NumericKey) else repr(x),
)
def test_out_of_range_values_are_refused_naming_the_key(numeric: NumericKey, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(document(numeric, value))
    assert info.value.key == numeric.key, info.value


@pytest.mark.parametrize(
    ("numeric", "value"),
    [(k, v) for k in KEYS for v in accepted_values(k)],
    ids=lambda x: x.key if isinstance(x, NumericKey) else repr(x),
)
async def test_accepted_values_let_the_components_run(
    numeric: NumericKey, value: Any, tmp_path: Path
) -> None:
    try:
        config = from_mapping(document(numeric, value))
    except ConfigError as exc:
        # In range, but against another key of its table or of the table enclosing it
        # (backoff_initial_s over the default backoff_max_s; server.limits.max_unparsed_bytes
        # over the default server.max_buffered_bytes): what does not load must still say
        # which key, in which table.
        table = numeric.key.rpartition(".")[0]
        named = exc.key.rpartition(".")[0]
        assert named == table or table.startswith(f"{named}."), exc
        return
    await use_components(config, tmp_path)


async def use_components(config: PipelineConfig, tmp_path: Path) -> None:
    """Build what each table configures the way the daemons do, and use it once."""
    admission = Admission(config.admission, pending_bytes=lambda: 0, free_disk=lambda: 1 << 50)
    assert admission.check(1, 100) is None, "a small call on an idle server must pass"
    assert admission.check(0, 0) in (None, Refusal.RATE)
    starved = Admission(config.admission, pending_bytes=lambda: 0, free_disk=lambda: 0)
    assert starved.check(1, 100) is Refusal.DISK, "the disk check must run"

    router = Router(config.routing)
    plan = router.plan(LogBatch.from_entries([LogEntry(category=b"c", message=b"m")]))
    assert plan.good or plan.bad

    codec = ServerConnection(config.server.limits)
    codec.receive_data(b"")
    remote_shutdown_allowed(config.server)
    LogService(
        name=config.name,
        journal=None,  # type: ignore[arg-type]  # set_option never reaches it
        router=router,
        admission=admission,
        fb303=config.fb303,
    ).set_option("k", "v")

    log = config.log
    repeat = RepeatFilter(
        lambda record: None,
        burst=log.repeat_burst,
        window_s=log.repeat_window_s,
        max_kinds=log.max_repeat_kinds,
    )
    assert repeat.filter(logging.makeLogRecord({"msg": "x", "levelno": logging.WARNING}))

    coordination = dataclasses.replace(config.coordination, state_dir=tmp_path / "state")
    build_coordinator(dataclasses.replace(config, coordination=coordination), "g")

    for section in config.consumers:
        if section.files is not None:
            FileSink(dataclasses.replace(section.files, file_path=tmp_path / "files"))
        if section.forward is not None:
            ForwardSink(section.forward)
        if section.cassandra is not None:
            _, make = BUILTINS[section.cassandra.materializer]
            make(section.cassandra.options).tables()
