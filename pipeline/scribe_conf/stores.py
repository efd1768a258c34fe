"""One Scribe store (and the stores inside it) as what the pipeline does instead.

The journal is every store's buffer, so a store becomes the *sinks* that consume its messages
from the journal (each a consumer group, built by ``mapping``), and perhaps a way of spreading
its categories over partitions (a bucket store):

========== ==========================================================================
file       a ``files`` sink (Scribe's layout, ``<file_path>/<category>/<category>_NNNNN``)
network    a ``forward`` sink to ``remote_host:remote_port``
buffer     its primary (the journal replaces the secondary: nothing to configure)
bucket     key-hash (or random) partitions of the route, and the bucket's sub-store; buckets
           that are different stores cannot be told apart by a sink (unsupported)
multi      the sinks of every sub-store (fan-out: each a consumer group)
null       no sink: the category is dropped (counted)
others     thriftfile, category, multifile, thriftmultifile: unsupported
========== ==========================================================================

Every key a store reads gets its verdict in the ``Report``; the values Scribe would have used
by default are the ones mapped when a key is absent (``max_size`` 1 GB, ``timeout`` 5 s, ...).
"""

from __future__ import annotations

import posixpath
import typing
from dataclasses import dataclass, field
from typing import Any

from consumers import ForwardSinkConfig, GroupConfig
from pipeline.scribe_conf.parse import Block, Setting
from pipeline.scribe_conf.report import Report, scope_of
from pipeline.scribe_conf.values import lookup, unsigned, yes
from pipeline.settings import bounds_of

# Scribe's defaults where ours differ or a note needs them.
SCRIBE_FILE_PATH = "/tmp"
SCRIBE_NETWORK_TIMEOUT_MS = 5000
SCRIBE_DELIMITER = ord(":")


def _upper_bound(cls: type, name: str) -> float:
    """The largest value field ``name`` of ``cls`` takes, as its annotation declares it."""
    metadata = typing.get_type_hints(cls, include_extras=True)[name].__metadata__
    return float(bounds_of(metadata)["le"])


# The pipeline's own bounds, read from the declarations so that a value Scribe allows is
# clamped to what the configuration then accepts: a group's retry delay and batch wait, and
# the forward sink's socket timeout.
MAX_BACKOFF_S = _upper_bound(GroupConfig, "backoff_max_s")
MAX_TIMEOUT_S = _upper_bound(ForwardSinkConfig, "timeout_s")
MAX_BATCH_WAIT_S = _upper_bound(GroupConfig, "batch_wait_s")
# Scribe's max_size=0 means no limit; ours must be a positive number.
UNLIMITED_SIZE = (1 << 63) - 1

NOT_THE_PIPELINE = "the journal is the buffer"


@dataclass
class SinkPlan:
    """One consumer group's sink: ``kind`` ("files" or "forward") and its table."""

    kind: str
    table: dict[str, Any]
    # Where the messages end up, for people: "/var/log/scribe/<category>/", "host:1463".
    destination: str
    scope: str


@dataclass
class Partitioning:
    """How a bucket store spreads a category over the route's partitions."""

    partitions: int
    partitioner: str
    key_delimiter: str | None
    scope: str


@dataclass
class StorePlan:
    sinks: list[SinkPlan] = field(default_factory=list)
    # A null store: what reaches it is dropped.
    null: bool = False
    partitioning: Partitioning | None = None
    # Consumer-group keys the store's settings decide (backoff from a buffer's retries).
    group: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Which file names Scribe gives a file store (``FileStoreBase``).

    ``exact``: a store of one category writes ``<file_path>/<base_filename>_NNNNN``;
    otherwise (default, prefix and category-list stores are models copied per category) it
    writes ``<file_path>/<category>/<category>_NNNNN``, or with ``new_thread_per_category=no``
    one file set for all its categories (``shared``).
    """

    exact: str | None = None
    shared: bool = False


class StoreMapper:
    def __init__(self, report: Report, layout: Layout) -> None:
        self.report = report
        self.layout = layout

    def map(self, block: Block) -> StorePlan:
        """The plan of ``block``, a store with a ``type``."""
        scope = scope_of(block)
        type_setting = block.settings.get("type")
        if type_setting is None:
            self._skip_subtree(block, "its store has no type")
            return StorePlan()
        kind = type_setting.value
        handler = {
            "file": self._file,
            "network": self._network,
            "buffer": self._buffer,
            "bucket": self._bucket,
            "multi": self._multi,
            "null": self._null,
        }.get(kind)
        if handler is None:
            why = _UNSUPPORTED_TYPES.get(kind, f"Scribe has no store of type {kind!r}")
            self.report.unsupported(type_setting, scope, why, fatal=True)
            self._skip_subtree(block, f"its {kind} store is not imported")
            return StorePlan()
        return handler(block, type_setting, scope)

    # ------------------------------------------------------------------ helpers

    def _get(self, block: Block, key: str, kind: str) -> Setting | None:
        return lookup(block, key, kind)

    def _skip_subtree(self, block: Block, why: str, *, unsupported: bool = False) -> None:
        for setting in block.settings.values():
            if not self.report.seen(setting):
                if unsupported:
                    self.report.unsupported(setting, scope_of(block), why)
                else:
                    self.report.ignored(setting, scope_of(block), why)
        for child in block.children:
            self._skip_subtree(child, why, unsupported=unsupported)

    def _unknown_children(self, block: Block, known: set[str], kind: str) -> None:
        for child in block.children:
            if child.name not in known:
                self._skip_subtree(child, f"Scribe reads no <{child.name}> in a {kind} store")

    # ------------------------------------------------------------------ file

    def _file(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        report = self.report
        report.mapped(type_setting, scope, 'a consumer group with sink = "files"')
        table: dict[str, Any] = {}
        fs_type = self._get(block, "fs_type", "file")
        if fs_type is not None and fs_type.value != "std":
            report.unsupported(
                fs_type,
                scope,
                f"the files sink writes local files only, not {fs_type.value}; this store's "
                "messages stay in the journal, with no group to deliver them",
                fatal=True,
            )
            self._skip_subtree(block, f"its {fs_type.value} file store is not imported")
            return StorePlan()
        if fs_type is not None:
            report.mapped(fs_type, scope, "the files sink (local files)")
        path_setting = self._get(block, "file_path", "file")
        file_path = SCRIBE_FILE_PATH if path_setting is None else path_setting.value
        sub = self._get(block, "sub_directory", "file")
        base = self._get(block, "base_filename", "file")
        ours, exact_layout, lost = self._file_path(file_path, base, sub)
        table["file_path"] = ours
        destination = f"{ours.rstrip('/')}/<category>/<category>_NNNNN"
        if path_setting is not None:
            what = f"file_path = {ours!r}"
            if not posixpath.isabs(file_path):
                what += (
                    " (relative: resolved against the pipeline configuration's directory, "
                    "not the working directory)"
                )
            if lost:
                report.unsupported(path_setting, scope, f"{what}; {lost}")
            else:
                report.mapped(path_setting, scope, what)
        else:
            report.note(type_setting, scope, f"no file_path: Scribe's default {SCRIBE_FILE_PATH}")
        if base is not None:
            if exact_layout:
                report.mapped(base, scope, "the files' names (they are the category's)")
            elif self.layout.exact is None:
                report.ignored(base, scope, "Scribe names a model store's files after the category")
            else:
                report.unsupported(base, scope, "files are named after the category")
        if sub is not None:
            report.unsupported(sub, scope, "no sub-directory below the category's directory")
        for key, why in (
            ("use_hostname_sub_directory", "no host-name sub-directory"),
            ("base_symlink_name", "the symlink is <category>_current"),
            ("write_meta", "no scribe_meta line ends a rotated file"),
            ("write_category", "files hold the messages only"),
        ):
            setting = self._get(block, key, "file")
            if setting is None:
                continue
            if yes(setting) or key == "base_symlink_name":
                report.unsupported(setting, scope, why)
            else:
                report.mapped(setting, scope, "the files sink's behaviour (off)")
        max_size = self._get(block, "max_size", "file")
        if max_size is not None:
            size = unsigned(max_size)
            table["max_size"] = UNLIMITED_SIZE if size == 0 else size
            report.mapped(max_size, scope, f"max_size = {table['max_size']}")
        self._rotation(block, scope, table)
        newlines = self._get(block, "add_newlines", "file")
        if newlines is not None:
            table["add_newlines"] = unsigned(newlines) != 0
            report.mapped(newlines, scope, f"add_newlines = {str(table['add_newlines']).lower()}")
        symlink = self._get(block, "create_symlink", "file")
        if symlink is not None:
            table["create_symlink"] = yes(symlink)
            state = str(table["create_symlink"]).lower()
            report.mapped(symlink, scope, f"create_symlink = {state}")
        for key, why in (
            (
                "max_write_size",
                "a batch is written in one call and fdatasynced before its offsets move",
            ),
            ("chunk_size", "plain files are never padded to chunks"),
            ("write_stats", "no scribe_stats file"),
            (
                "rotate_on_reopen",
                "a restarted writer appends to the newest file, as Scribe's default does",
            ),
        ):
            setting = self._get(block, key, "file")
            if setting is not None:
                report.ignored(setting, scope, why)
        self._unknown_children(block, set(), "file")
        return StorePlan(sinks=[SinkPlan("files", table, destination, scope)])

    def _file_path(
        self, file_path: str, base: Setting | None, sub: Setting | None
    ) -> tuple[str, bool, str]:
        """Our ``file_path``, whether the layout is Scribe's exactly, and what is lost."""
        ours = "<file_path>/<category>/<category>_NNNNN"
        if self.layout.shared:
            return (
                file_path,
                False,
                "Scribe wrote all of this store's categories into one file set "
                f"(new_thread_per_category=no); the files sink writes {ours}",
            )
        category = self.layout.exact
        if category is None:
            return file_path, False, ""
        base_name = category if base is None else base.value
        parent, leaf = posixpath.split(file_path.rstrip("/"))
        if sub is None and base_name == category and leaf == category and parent:
            # <dir>/<category>/<category>_NNNNN is exactly what the files sink writes.
            return parent, True, ""
        return (
            file_path,
            False,
            f"Scribe wrote {file_path.rstrip('/')}/{base_name}_NNNNN; the files sink writes "
            f"{file_path.rstrip('/')}/{category}/{category}_NNNNN",
        )

    def _rotation(self, block: Block, scope: str, table: dict[str, Any]) -> None:
        report = self.report
        period = self._get(block, "rotate_period", "file")
        kind = None
        if period is not None:
            value = period.value
            if value in ("hourly", "daily"):
                table["rotate_period"] = kind = value
            elif value == "never":
                kind = None
            elif spelt := _period(value):
                table["rotate_period"] = spelt
                kind = "other"
            if period.value == "never":
                report.mapped(period, scope, "no rotation by time")
            elif "rotate_period" in table:
                report.mapped(period, scope, f"rotate_period = {table['rotate_period']!r}")
            else:
                report.unsupported(
                    period, scope, "Scribe reads this as never (a bad period): no rotation by time"
                )
        for key in ("rotate_hour", "rotate_minute"):
            setting = self._get(block, key, "file")
            if setting is None:
                continue
            unsigned(setting)
            if kind in ("hourly", "daily"):
                when = "on the hour" if kind == "hourly" else "at midnight"
                report.unsupported(setting, scope, f"{kind} files rotate {when}")
            else:
                report.ignored(setting, scope, "only hourly and daily rotation read it")

    # ------------------------------------------------------------------ network

    def _network(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        report = self.report
        report.mapped(type_setting, scope, 'a consumer group with sink = "forward"')
        fatal = False
        for key, why in (
            ("smc_service", "no service-management lookup of the upstream"),
            ("service_list", "one upstream per forward sink, not a list to choose from"),
            ("dynamic_config_type", "no dynamic upstream configuration"),
        ):
            setting = self._get(block, key, "network")
            if setting is not None:
                report.unsupported(setting, scope, why, fatal=True)
                fatal = True
        for key in ("service_options", "service_cache_timeout", "list_default_port"):
            setting = self._get(block, key, "network")
            if setting is not None:
                report.ignored(setting, scope, "only for an upstream looked up by service")
        host = self._get(block, "remote_host", "network")
        port = self._get(block, "remote_port", "network")
        table: dict[str, Any] = {}
        if host is None or not host.value:
            report.unsupported(
                type_setting, scope, "no remote_host: Scribe could not send anywhere", fatal=True
            )
            fatal = True
        else:
            table["host"] = host.value
            report.mapped(host, scope, f"host = {host.value!r}")
        if port is None or not 1 <= unsigned(port) <= 65535:
            where = type_setting if port is None else port
            report.unsupported(
                where, scope, "no remote_port in 1..65535: Scribe could not connect", fatal=True
            )
            fatal = True
        else:
            table["port"] = unsigned(port)
            report.mapped(port, scope, f"port = {table['port']}")
        timeout = self._get(block, "timeout", "network")
        ms = SCRIBE_NETWORK_TIMEOUT_MS if timeout is None else unsigned(timeout)
        seconds = min(max(ms, 1) / 1000, MAX_TIMEOUT_S)
        table["timeout_s"] = seconds
        if timeout is not None:
            report.mapped(timeout, scope, f"timeout_s = {seconds} (Scribe's is milliseconds)")
        for key, why in (
            ("use_conn_pool", "each partition keeps its own connection"),
            (
                "ignore_network_error",
                "the forward sink keeps a batch and retries it, never drops it",
            ),
        ):
            setting = self._get(block, key, "network")
            if setting is not None:
                report.ignored(setting, scope, why)
        self._unknown_children(block, set(), "network")
        if fatal:
            return StorePlan()
        destination = f"{table['host']}:{table['port']}"
        return StorePlan(sinks=[SinkPlan("forward", table, destination, scope)])

    # ------------------------------------------------------------------ buffer

    def _buffer(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        report = self.report
        report.mapped(
            type_setting, scope, "the journal (durable before Log answers OK), then its primary"
        )
        group: dict[str, Any] = {}
        adaptive = block.settings.get("adaptive_backoff")
        retry_keys = ("retry_interval", "min_retry_interval", "max_retry_interval")
        for key in retry_keys:
            setting = self._get(block, key, "buffer")
            if setting is None:
                continue
            seconds = float(min(max(unsigned(setting), 1), MAX_BACKOFF_S))
            uses = (key == "retry_interval") != (adaptive is not None and yes(adaptive))
            if uses and key in ("retry_interval", "max_retry_interval"):
                group["backoff_max_s"] = seconds
                report.mapped(setting, scope, f"the group's backoff_max_s = {seconds}")
            elif uses:
                group["backoff_initial_s"] = seconds
                report.mapped(setting, scope, f"the group's backoff_initial_s = {seconds}")
            else:
                report.ignored(setting, scope, "not read with this adaptive_backoff")
        if adaptive is not None:
            report.mapped(adaptive, scope, "the choice of retry keys above")
        for key, why in (
            ("retry_interval_range", "every backoff delay is jittered down to half"),
            ("max_random_offset", "every backoff delay is jittered down to half"),
            ("buffer_send_rate", "a caught-up group reads the journal as fast as the sink takes"),
            ("replay_buffer", NOT_THE_PIPELINE + ": everything journaled is delivered"),
            ("flush_streaming", NOT_THE_PIPELINE),
            ("buffer_bypass_max_ratio", NOT_THE_PIPELINE),
        ):
            setting = self._get(block, key, "buffer")
            if setting is not None:
                report.ignored(setting, scope, why)
        secondary = block.child("secondary")
        if secondary is not None:
            self._skip_subtree(secondary, f"the secondary store: {NOT_THE_PIPELINE}")
        self._unknown_children(block, {"primary", "secondary"}, "buffer")
        primary = block.child("primary")
        if primary is None:
            report.unsupported(
                type_setting,
                scope,
                "no <primary>: Scribe wrote to a file store in /tmp instead",
                fatal=True,
            )
            return StorePlan(group=group)
        if (t := primary.settings.get("type")) is not None and t.value == "multi":
            report.note(
                t,
                scope_of(primary),
                "Scribe refuses a multi primary (it wrote to a "
                "file store in /tmp instead); imported as the multi's groups",
            )
        plan = self.map(primary)
        plan.group = {**group, **plan.group}
        return plan

    # ------------------------------------------------------------------ bucket

    def _bucket(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        report = self.report
        report.mapped(type_setting, scope, "partitions of the category's route")
        count_setting = block.settings.get("num_buckets")
        if count_setting is None or not 1 <= unsigned(count_setting) <= 65536:
            report.unsupported(
                type_setting,
                scope,
                "no num_buckets in 1..65536: Scribe's bucket store refuses every message",
                fatal=True,
            )
            self._skip_subtree(block, "its bucket store has no num_buckets")
            return StorePlan()
        count = unsigned(count_setting)
        report.mapped(count_setting, scope, f"partitions = {count}")
        partitioning = self._bucketizer(block, scope, count)
        remove_key = block.settings.get("remove_key")
        fatal = False
        if remove_key is not None:
            if yes(remove_key):
                report.unsupported(
                    remove_key,
                    scope,
                    "messages are delivered whole, their key and delimiter included",
                    fatal=True,
                )
                fatal = True
            else:
                report.mapped(remove_key, scope, "messages delivered whole")
        single = block.child("bucket")
        if single is not None:
            plan = self._one_bucket(block, single, scope)
        else:
            plan = self._many_buckets(block, count, scope)
        plan.partitioning = partitioning
        if fatal:
            plan.sinks = []
        return plan

    def _bucketizer(self, block: Block, scope: str, count: int) -> Partitioning:
        report = self.report
        kind_setting = block.settings.get("bucket_type")
        kind = "context_log" if kind_setting is None else kind_setting.value
        delimiter = self._delimiter(block, scope, kind)
        range_setting = block.settings.get("bucket_range")
        if kind in ("key_hash", "key_modulo", "key_range"):
            partitioning = Partitioning(count, "key-hash", delimiter, scope)
            target = f'partitioner = "key-hash" with key_delimiter = {delimiter!r}'
            if kind != "key_hash":
                target += (
                    f" (CRC-32 of the key instead of Scribe's {kind}: the same key always "
                    "lands in the same partition, but not in the bucket Scribe chose)"
                )
        else:
            partitioning = Partitioning(count, "random", None, scope)
            target = 'partitioner = "random"'
            if kind == "context_log":
                target += " (Scribe hashed a context log's fourth field; which events share "
                target += "a partition differs)"
            elif kind != "random":
                target += f" (Scribe reads the unknown bucket_type {kind!r} as context_log)"
        if kind_setting is not None:
            report.mapped(kind_setting, scope, target)
        else:
            report.note(block.settings["type"], scope, f"no bucket_type (context_log): {target}")
        if range_setting is not None:
            unsigned(range_setting)
            if kind == "key_range":
                report.mapped(range_setting, scope, "the key-hash partitioner (above)")
            else:
                report.ignored(range_setting, scope, "only key_range reads it")
        return partitioning

    def _delimiter(self, block: Block, scope: str, kind: str) -> str:
        setting = block.settings.get("delimiter")
        if setting is None:
            return chr(SCRIBE_DELIMITER)
        code = unsigned(setting)
        if kind not in ("key_hash", "key_modulo", "key_range"):
            self.report.ignored(setting, scope, f"{kind} buckets need no delimiter")
            return chr(SCRIBE_DELIMITER)
        if not 1 <= code <= 255:
            self.report.mapped(setting, scope, "':' (Scribe's default for a code outside 1..255)")
            return chr(SCRIBE_DELIMITER)
        self.report.mapped(setting, scope, f"key_delimiter = {chr(code)!r} (character {code})")
        return chr(code)

    def _one_bucket(self, block: Block, single: Block, scope: str) -> StorePlan:
        report = self.report
        kind = single.settings.get("type")
        if kind is None or kind.value not in ("file", "thriftfile"):
            where = kind or block.settings["type"]
            report.unsupported(
                where,
                scope_of(single),
                "Scribe takes only file or thriftfile stores in a <bucket>: it refuses every "
                "message",
                fatal=True,
            )
            self._skip_subtree(single, "its bucket store is refused by Scribe")
            return StorePlan()
        lost = (
            "every bucket's messages go to one directory per category: Scribe's "
            "<file_path>/<bucket_subdir>NNN/ directories per bucket are not reproduced"
        )
        for key in ("bucket_subdir", "bucket_offset", "failure_bucket"):
            setting = block.settings.get(key)
            if setting is not None:
                report.unsupported(setting, scope, lost)
        plan = self.map(single)
        report.note(kind, scope_of(single), lost)
        return plan

    def _many_buckets(self, block: Block, count: int, scope: str) -> StorePlan:
        report = self.report
        for key in ("bucket_subdir", "bucket_offset", "failure_bucket"):
            setting = block.settings.get(key)
            if setting is not None:
                report.ignored(setting, scope, "Scribe reads it only with one <bucket>")
        plans = []
        for index in range(count + 1):
            sub = block.child(f"bucket{index}")
            if sub is None:
                report.unsupported(
                    block.settings["type"],
                    scope,
                    f"no <bucket{index}>: Scribe's bucket store refuses every message",
                    fatal=True,
                )
                self._skip_subtree(block, "its bucket store is refused by Scribe")
                return StorePlan()
            plans.append(self.map(sub))
        self._unknown_children(
            block, {f"bucket{i}" for i in range(count + 1)}, "bucket (with its num_buckets)"
        )
        sinks = [(s.kind, sorted(s.table.items())) for p in plans for s in p.sinks]
        if all(p.null for p in plans):
            return StorePlan(null=True)
        if len(set(map(repr, sinks))) == 1 and all(len(p.sinks) == 1 for p in plans):
            return StorePlan(sinks=plans[1].sinks, group=plans[1].group)
        report.unsupported(
            block.settings["type"],
            scope,
            "its buckets are different stores, and a consumer group delivers every partition "
            "of a category to one sink: the category is journaled in partitions, with no "
            "group to deliver it (add groups by hand)",
            fatal=True,
        )
        return StorePlan()

    # ------------------------------------------------------------------ multi, null

    def _multi(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        report = self.report
        report.mapped(type_setting, scope, "one consumer group per sub-store (fan-out)")
        success = block.settings.get("report_success")
        if success is not None:
            report.ignored(success, scope, "each group delivers every message on its own")
        plan = StorePlan()
        index = 0
        while (sub := block.child(f"store{index}")) is not None:
            part = self.map(sub)
            plan.sinks += part.sinks
            plan.group = {**part.group, **plan.group}
            if plan.partitioning is None:
                plan.partitioning = part.partitioning
            index += 1
        self._unknown_children(block, {f"store{i}" for i in range(index)}, "multi")
        if index == 0:
            report.unsupported(
                type_setting,
                scope,
                "no <store0>: Scribe's multi store has nothing to write to",
                fatal=True,
            )
        plan.null = index > 0 and not plan.sinks
        return plan

    def _null(self, block: Block, type_setting: Setting, scope: str) -> StorePlan:
        self.report.mapped(type_setting, scope, "no consumer group: nothing is delivered")
        self._unknown_children(block, set(), "null")
        return StorePlan(null=True)


_UNSUPPORTED_TYPES = {
    "thriftfile": "the files sink writes messages as they are, not Thrift-framed files",
    "category": "no per-category model store",
    "multifile": "no multifile store (a file store with a default category does the same)",
    "thriftmultifile": "the files sink writes no Thrift-framed files",
}


def _period(value: str) -> str:
    """Scribe's ``N[s|m|h|d|w]`` period as the files sink spells it (weeks in days)."""
    number, unit = value[:-1], value[-1]
    if unit.isdigit():
        number, unit = value, "s"
    if unit == "w" and number.isdigit():
        return f"{int(number) * 7}d"
    if unit in "smhd" and number.isdigit() and int(number) > 0:
        return f"{int(number)}{unit}"
    return ""
