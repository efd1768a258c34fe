"""A parsed scribe.conf as a pipeline configuration: the server's keys, routes, consumer groups.

Scribe hands each message to the stores of its category: those naming it exactly (all of
them), else those of the first matching ``prefix*`` in sorted order, else the ``default``
stores; a store holds the message in memory, perhaps buffers it in files, and writes it on.
Here every routed message is journaled first (the journal is the buffer), and each store
becomes consumer groups reading it from the journal:

* each ``category=`` / ``categories=`` pattern becomes a route (exact, ``prefix*``,
  ``default``); a bucket store gives its route key-hash partitions.  The longest matching
  prefix wins here, not the first in sorted order: where that changes which store a category
  reaches, the report says so on the stores' ``category`` lines;
* each sink a store ends in (see ``stores``) becomes a consumer group over the store's
  patterns;
* a null store's categories get no route (they are dropped and counted as ``received bad``),
  or, where a broader route would take them, a route to a journal category no group reads.

Consumer groups match category patterns without precedence, so a group of a broad pattern
also reads the categories narrower stores take.  A default store therefore reads:

* every category (``*``), when it is the only kind of store: exact;
* the catch-all category (``routing.unroutable = "journal"``), when all its sinks forward:
  exact, since the forwarder restores each message's own category;
* every category otherwise (a files sink names its files after the journal category, so it
  cannot read the catch-all): the categories of the other stores also land in its files,
  which the report says; and a null store's categories would be written too, which cannot
  be honoured safely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers import GroupConfig
from pipeline.scribe_conf.parse import Block, Setting
from pipeline.scribe_conf.report import Report, scope_of
from pipeline.scribe_conf.stores import (
    MAX_BATCH_WAIT_S,
    Layout,
    Partitioning,
    StoreMapper,
    StorePlan,
)
from pipeline.scribe_conf.toml_out import COMMENTS
from pipeline.scribe_conf.values import unsigned

DEFAULT = "default"
CATCH_ALL = "scribe_default"
DISCARD = "scribe_discarded"
# A discarded category's segments go at the first retention run after they roll.
DISCARD_RETENTION_S = 60.0
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Rule:
    """One store's claim on one pattern."""

    store: int
    plan: StorePlan
    category: Setting


@dataclass
class Imported:
    """The configuration tree (TOML-shaped) and what became of each Scribe key."""

    tree: dict[str, Any]
    report: Report
    routes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


def import_scribe(root: Block, source: str = "scribe.conf") -> Imported:
    report = Report()
    tree: dict[str, Any] = {
        COMMENTS: [
            f"Imported from {source} by `pipeline config import-scribe`; every key not",
            "written here is the pipeline's default (conf/pipeline.toml lists them all).",
        ]
    }
    threads_per_category = _server(root, tree, report)
    rules: dict[str, list[Rule]] = {}
    queue_keys: dict[int, dict[str, Any]] = {}
    for index, block in enumerate(root.children):
        patterns, category = _patterns(block, report)
        if not patterns or category is None:
            continue
        layout = _layout(block, patterns, threads_per_category)
        plan = StoreMapper(report, layout).map(block)
        if "type" not in block.settings:
            continue
        queue_keys[index] = _queue_keys(block, report)
        for pattern in patterns:
            rules.setdefault(pattern, []).append(Rule(index, plan, category))
    _Assembler(rules, queue_keys, report).fill(tree)
    report.finish(root)
    routing = tree.get("routing", {})
    return Imported(
        tree,
        report,
        routes=[r["category"] for r in routing.get("routes", [])],
        groups=[g["name"] for g in tree.get("consumers", [])],
    )


# ---------------------------------------------------------------------- the server's keys


def _server(root: Block, tree: dict[str, Any], report: Report) -> bool:
    """The top-level keys; returns whether Scribe made a thread per category (the default)."""
    server: dict[str, Any] = {}
    admission: dict[str, Any] = {}
    settings = root.settings
    if (port := settings.get("port")) is not None:
        value = unsigned(port)
        if not 1 <= value <= 65535:
            report.unsupported(port, "", "Scribe refuses to start without a port in 1..65535")
        else:
            server["port"] = value
            report.mapped(
                port,
                "",
                f"server.port = {value} (server.host stays 127.0.0.1: Scribe listened on every "
                'address; set host = "0.0.0.0" for clients on other hosts)',
            )
    if (rate := settings.get("max_msg_per_second")) is not None:
        admission["rate_messages_per_s"] = float(unsigned(rate))
        report.mapped(rate, "", f"admission.rate_messages_per_s = {float(unsigned(rate))}")
    if (queue := settings.get("max_queue_size")) is not None:
        size = unsigned(queue)
        if size == 0:
            report.ignored(queue, "", "0 would refuse every call; the default stays")
        else:
            admission["max_pending_bytes"] = size
            report.mapped(
                queue,
                "",
                f"admission.max_pending_bytes = {size} (bytes accepted but not yet durable: "
                "past it Log answers TRY_LATER, counted as 'denied for queue size')",
            )
    if (conns := settings.get("max_conn")) is not None:
        count = unsigned(conns)
        if count == 0:
            report.ignored(conns, "", "0 is no limit in Scribe; server.max_connections stays")
        else:
            server["max_connections"] = count
            report.mapped(
                conns,
                "",
                f"server.max_connections = {count} (at the limit the longest-idle connection "
                "makes room, where Scribe refused the new one)",
            )
    for key, why in (
        (
            "check_interval",
            "consumers deliver as soon as messages are durable; there is no periodic store check",
        ),
        (
            "num_thrift_server_threads",
            "one event loop serves every connection (large calls "
            "are decoded in server.codec_threads)",
        ),
    ):
        if (setting := settings.get(key)) is not None:
            report.ignored(setting, "", why)
    threads = settings.get("new_thread_per_category")
    if threads is not None:
        report.ignored(threads, "", "the pipeline has no per-category threads")
    if server:
        tree["server"] = server
    if admission:
        tree["admission"] = admission
    return threads is None or threads.value != "no"


# ---------------------------------------------------------------------- a store's selection


def _patterns(block: Block, report: Report) -> tuple[list[str], Setting | None]:
    scope = scope_of(block)
    single = block.settings.get("category")
    many = block.settings.get("categories")
    patterns: list[str] = []
    if single is not None and single.value:
        patterns.append(single.value)
    if many is not None:
        patterns += many.value.split()
    if not patterns:
        why = "Scribe configures no store without a category"
        for setting in block.settings.values():
            report.ignored(setting, scope, why)
        _ignore_tree(block, report, why)
        return [], None
    if "type" not in block.settings:
        for given in (single, many):
            if given is not None:
                report.unsupported(
                    given,
                    scope,
                    "Scribe configures no store without a type: these "
                    "categories go to the other stores",
                )
        return [], None
    for index, pattern in enumerate(patterns):
        if pattern == "*":
            # Scribe's "*" is a prefix that matches every category before any default store.
            patterns[index] = DEFAULT
    chosen = single if single is not None else many
    return list(dict.fromkeys(patterns)), chosen


def _ignore_tree(block: Block, report: Report, why: str) -> None:
    for child in block.children:
        for setting in child.settings.values():
            report.ignored(setting, scope_of(child), why)
        _ignore_tree(child, report, why)


def _layout(block: Block, patterns: list[str], threads_per_category: bool) -> Layout:
    exact = (
        len(patterns) == 1
        and "categories" not in block.settings
        and patterns[0] != DEFAULT
        and not patterns[0].endswith("*")
    )
    if exact:
        return Layout(exact=patterns[0])
    return Layout(shared=not threads_per_category)


def _queue_keys(block: Block, report: Report) -> dict[str, Any]:
    """The keys Scribe's per-store queue reads, as consumer-group keys."""
    scope = scope_of(block)
    group: dict[str, Any] = {}
    if (size := block.settings.get("target_write_size")) is not None:
        group["batch_bytes"] = max(unsigned(size), 1)
        report.mapped(size, scope, f"the group's batch_bytes = {group['batch_bytes']}")
    if (wait := block.settings.get("max_write_interval")) is not None:
        seconds = float(min(unsigned(wait), MAX_BATCH_WAIT_S))
        group["batch_wait_s"] = seconds
        report.mapped(wait, scope, f"the group's batch_wait_s = {seconds}")
    for key, why in (
        ("must_succeed", "a batch is retried until its sink takes it, never dropped"),
        ("max_batch_size", "batches are bounded by batch_messages and batch_bytes"),
    ):
        if (setting := block.settings.get(key)) is not None:
            report.ignored(setting, scope, why)
    return group


# ---------------------------------------------------------------------- routes and groups


def _matches(pattern: str, category: str) -> bool:
    """Whether a consumer group's ``pattern`` reads journal category ``category``."""
    if pattern in (DEFAULT, "*"):
        return True
    if pattern.endswith("*"):
        return category.startswith(pattern[:-1])
    return pattern == category


def _free_name(base: str, patterns: Iterable[str]) -> str:
    """``base``, or a variant of it that no pattern in ``patterns`` reads."""
    patterns = [p for p in patterns if p != DEFAULT]
    name = base
    while any(_matches(p, name) for p in patterns):
        name = "_" + name
    return name


class _Assembler:
    def __init__(
        self, rules: dict[str, list[Rule]], queue_keys: dict[int, dict[str, Any]], report: Report
    ) -> None:
        self.rules = rules
        self.queue_keys = queue_keys
        self.report = report
        self.routes: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []

    def fill(self, tree: dict[str, Any]) -> None:
        others = [p for p in self.rules if p != DEFAULT]
        mode = self._default_mode(others)
        self._precedence_notes()
        group_patterns = [p for p in others if self._live(p)]
        catch_all = _free_name(CATCH_ALL, group_patterns)
        discard = _free_name(DISCARD, group_patterns)
        routing: dict[str, Any] = {}
        for pattern in sorted(others, key=_route_order):
            if self._live(pattern):
                self.routes.append(self._route(pattern))
                self._mapped_to_route(pattern, f"route {pattern!r}")
            elif self._needs_discard(pattern, mode):
                self.routes.append(
                    {"category": pattern, "target": discard, "retention_age_s": DISCARD_RETENTION_S}
                )
                for rule in self.rules[pattern]:
                    self.report.note(
                        rule.category,
                        scope_of_rule(rule),
                        f"route {pattern!r} to journal category {discard!r}, which no group "
                        f"reads (deleted by retention after {DISCARD_RETENTION_S:g} s, once "
                        "its segment rolls): a broader route would otherwise take it",
                    )
            else:
                for rule in self.rules[pattern]:
                    self.report.note(
                        rule.category,
                        scope_of_rule(rule),
                        f"no route for {pattern!r}: dropped, counted as 'received bad'",
                    )
        if mode in ("direct", "everything"):
            self.routes.append(self._route(DEFAULT))
            self._mapped_to_route(DEFAULT, "route 'default'")
        if mode == "catch-all":
            self._mapped_to_route(
                DEFAULT,
                f"routing.unroutable = 'journal' into {catch_all!r} (the original category "
                "travels in the metadata, and the forwarder sends it on under it; blank "
                "categories go there too, where Scribe dropped them)",
            )
            routing["unroutable"] = "journal"
            routing["catch_all_category"] = catch_all
            part = self._partitioning(DEFAULT)
            if part is not None:
                routing["catch_all_partitions"] = part.partitions
        routing["routes"] = self.routes
        tree["routing"] = routing
        for pattern in [*others, DEFAULT]:
            for rule in self.rules.get(pattern, []):
                self._groups_for(rule, pattern, mode, catch_all)
        if self.groups:
            tree["consumers"] = self.groups

    def _default_mode(self, others: list[str]) -> str:
        """What the default stores read (the module docstring): "none" (there are none, or
        they are null), "direct" (every category, the only kind of store), "catch-all"
        (only what no other route takes: they forward) or "everything" (files)."""
        defaults = self.rules.get(DEFAULT, [])
        default_sinks = [s for r in defaults for s in r.plan.sinks]
        if default_sinks:
            if not others:
                return "direct"
            if all(s.kind == "forward" for s in default_sinks):
                return "catch-all"
            return "everything"
        if defaults and not all(r.plan.null for r in defaults):
            return "direct"  # journaled, though its store could not be imported
        return "none"

    def _mapped_to_route(self, pattern: str, target: str) -> None:
        for rule in self.rules.get(pattern, []):
            self.report.mapped(rule.category, scope_of_rule(rule), target)

    def _live(self, pattern: str) -> bool:
        return any(not r.plan.null for r in self.rules[pattern])

    def _needs_discard(self, pattern: str, mode: str) -> bool:
        if mode == "catch-all":
            return True
        if mode == "everything":
            for rule in self.rules[pattern]:
                self.report.unsupported(
                    rule.category,
                    scope_of_rule(rule),
                    "the default store's group reads every category (it writes files, "
                    "named after their journal category) and so would write these too",
                    fatal=True,
                )
            return False
        # A broader prefix route would take the category if it had no route of its own.
        stem = pattern.removesuffix("*")
        return any(
            other.endswith("*")
            and self._live(other)
            and stem.startswith(other[:-1])
            and other != pattern
            for other in self.rules
        )

    def _partitioning(self, pattern: str) -> Partitioning | None:
        found = [r.plan.partitioning for r in self.rules.get(pattern, []) if r.plan.partitioning]
        for extra in found[1:]:
            if (extra.partitions, extra.partitioner) != (found[0].partitions, found[0].partitioner):
                rule = self.rules[pattern][0]
                self.report.note(
                    rule.category,
                    scope_of_rule(rule),
                    f"one partitioning per route: {extra.scope}'s buckets are not used",
                )
        return found[0] if found else None

    def _route(self, pattern: str) -> dict[str, Any]:
        route: dict[str, Any] = {"category": pattern}
        part = self._partitioning(pattern)
        if part is not None:
            route["partitions"] = part.partitions
            route["partitioner"] = part.partitioner
            if part.key_delimiter is not None:
                route["key_delimiter"] = part.key_delimiter
        return route

    def _precedence_notes(self) -> None:
        prefixes = sorted(p for p in self.rules if p.endswith("*"))
        for short in prefixes:
            for long in prefixes:
                if long == short or not long.startswith(short[:-1]):
                    continue
                # Scribe tries prefixes in sorted order (with the '*'), the first match wins.
                if min(short, long) != short:
                    continue
                text = (
                    f"categories starting with {long[:-1]!r} reach the stores of {long!r} "
                    f"here (the longest prefix wins), where Scribe sent them to those of "
                    f"{short!r} (the first in sorted order)"
                )
                for rule in [*self.rules[short], *self.rules[long]]:
                    self.report.note(rule.category, scope_of_rule(rule), text)

    def _groups_for(self, rule: Rule, pattern: str, mode: str, catch_all: str) -> None:
        if pattern == DEFAULT:
            categories = [catch_all] if mode == "catch-all" else ["*"]
        else:
            categories = [pattern]
        # One group per store and sink: a store of several patterns reads them all.
        for index, sink in enumerate(rule.plan.sinks):
            name = self._name(rule, index, sink.kind)
            existing = next((g for g in self.groups if g["name"] == name), None)
            if existing is not None:
                if categories[0] not in existing["categories"]:
                    existing["categories"].append(categories[0])
                continue
            group: dict[str, Any] = {"name": name, "categories": list(categories)}
            group["sink"] = sink.kind
            group.update(self.queue_keys.get(rule.store, {}))
            group.update(rule.plan.group)
            _backoff_in_order(group)
            group[sink.kind] = dict(sink.table)
            self.groups.append(group)
            self.report.note(
                rule.category,
                scope_of_rule(rule),
                f"consumer group {name!r} ({sink.kind} to {sink.destination})",
            )
            self._leak_note(rule, pattern, mode, name)

    def _leak_note(self, rule: Rule, pattern: str, mode: str, name: str) -> None:
        if pattern == DEFAULT and mode != "everything":
            return
        mine = {p for p, rs in self.rules.items() if any(r.store == rule.store for r in rs)}
        foreign = sorted(
            p
            for p, rs in self.rules.items()
            if p not in mine
            and p != DEFAULT
            and not all(r.plan.null for r in rs)
            and (
                pattern == DEFAULT
                or (pattern.endswith("*") and p.removesuffix("*").startswith(pattern[:-1]))
            )
        )
        if foreign:
            self.report.unsupported(
                rule.category,
                scope_of_rule(rule),
                f"group {name!r} also reads {', '.join(map(repr, foreign))}, which Scribe "
                "gave to other stores (a group's patterns cannot exclude categories)",
            )

    def _name(self, rule: Rule, index: int, kind: str) -> str:
        first = next(p for p, rs in self.rules.items() if any(r.store == rule.store for r in rs))
        label = _NAME_CHARS.sub("_", first.removesuffix("*")) or "all"
        return f"store{rule.store}-{label}-{kind}" + (f"-{index}" if index else "")


def _backoff_in_order(group: dict[str, Any]) -> None:
    """A first retry delay over the longest one (a buffer's min_retry_interval above its max, or
    above the default longest): the longest the scribe.conf gave wins, else the first delay it
    gave raises the default longest to itself."""
    initial = group.get("backoff_initial_s", GroupConfig.backoff_initial_s)
    if initial <= group.get("backoff_max_s", GroupConfig.backoff_max_s):
        return
    if "backoff_max_s" in group:
        group["backoff_initial_s"] = group["backoff_max_s"]
    else:
        group["backoff_max_s"] = initial


def scope_of_rule(rule: Rule) -> str:
    return f"store{rule.store}"


def _route_order(pattern: str) -> tuple[int, str]:
    return (1 if pattern.endswith("*") else 0, pattern)
