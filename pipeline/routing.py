"""Routing: which journal partitions receive each event.

Matching follows Scribe's store matching with one deliberate change:

1. routes whose pattern equals the category exactly (several may: each receives the event, so a
   category can fan out to several journal categories);
2. otherwise the route with the *longest* matching ``prefix*`` pattern (Scribe takes the first in
   sorted order; the longest prefix is the most specific rule and does not depend on spelling);
3. otherwise the ``default`` route;
4. otherwise the event is unroutable, as are events with a blank category: they are counted
   (``received bad`` / ``received blank category``) and, per configuration, dropped or journaled
   to a catch-all category with the original category kept in the message metadata.

A route whose journal category the journal may not create (``journal.max_categories`` reached:
the router asks ``admit_category``) does not receive the event; an event left without a route that
way is unroutable too, and counted in ``Plan.over_limit`` besides.

Within a route, a partitioner picks the partition: ``round-robin`` and ``random`` place all of a
call's events for that category in one partition (one journal record, order kept), ``key-hash``
hashes the part of each message before ``key_delimiter`` (like Scribe's bucket store) with CRC-32,
which is stable across processes and restarts.
"""

from __future__ import annotations

import enum
import random
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge, Gt, Interval

from scribe_compat import LogBatch

DEFAULT_PATTERN = "default"
METADATA_ORIGINAL_CATEGORY = b"scribe_category"


class Partitioner(enum.Enum):
    ROUND_ROBIN = "round-robin"
    RANDOM = "random"
    KEY_HASH = "key-hash"


class Unroutable(enum.Enum):
    DROP = "drop"
    JOURNAL = "journal"


@dataclass(frozen=True)
class RouteConfig:
    """One ``[[routing.routes]]`` table."""

    # "name" matches exactly, "prefix*" matches by prefix, "default" catches the rest.
    category: str
    # Each partition is a directory and an open writer: 65536 is far beyond any need.
    partitions: Annotated[int, Interval(ge=1, le=65536)] = 1
    partitioner: Partitioner = Partitioner.ROUND_ROBIN
    # key-hash: the key is the message up to the first delimiter (the whole message without one).
    key_delimiter: str = ":"
    # The journal category to write to; by default the event's own category.
    target: str | None = None
    retention_age_s: Annotated[float, Gt(0)] | None = None
    retention_bytes: Annotated[int, Ge(1)] | None = None

    def __post_init__(self) -> None:
        if not self.category:
            raise ValueError("route category must not be empty")
        star = self.category.find("*")
        if star not in (-1, len(self.category) - 1):
            raise ValueError(f"route {self.category!r}: '*' may only end a prefix pattern")
        if self.category == "*":
            raise ValueError("route '*': write 'default' for the catch-all route")
        if self.partitioner is Partitioner.KEY_HASH and not self.key_delimiter:
            raise ValueError(f"route {self.category!r}: key-hash needs a key_delimiter")
        if self.target is not None and not self.target:
            raise ValueError(f"route {self.category!r}: target must not be empty")

    @property
    def is_prefix(self) -> bool:
        return self.category.endswith("*")


@dataclass(frozen=True)
class RoutingConfig:
    """The ``[routing]`` table."""

    routes: tuple[RouteConfig, ...] = (RouteConfig(DEFAULT_PATTERN),)
    unroutable: Unroutable = Unroutable.DROP
    catch_all_category: str = "scribe_unroutable"
    catch_all_partitions: Annotated[int, Interval(ge=1, le=65536)] = 1
    # Route lookups are cached per category; the cache is cleared when it grows past this, so
    # a client inventing categories cannot grow memory without bound.
    max_cached_categories: Annotated[int, Ge(1)] = 65536

    def __post_init__(self) -> None:
        seen: set[tuple[str, str | None]] = set()
        for route in self.routes:
            ident = (route.category, route.target)
            if ident in seen:
                raise ValueError(f"route {route.category!r} with target {route.target!r} twice")
            seen.add(ident)
        if not self.catch_all_category or "*" in self.catch_all_category:
            raise ValueError("catch_all_category must be a plain, non-empty category")


@dataclass
class AppendGroup:
    """Messages bound for one journal partition, in arrival order."""

    messages: list[bytes] = field(default_factory=list)
    metadata: list[dict[bytes, bytes] | None] | None = None
    # Whether the lists are a call's own columns, taken without a copy (``extend``): copying
    # 100,000 references, and freeing the copy after the append, holds the event loop for
    # milliseconds.  They are copied before anything is added to them.
    borrowed: bool = field(default=False, repr=False, compare=False)

    def _own(self) -> None:
        if self.borrowed:
            self.messages = list(self.messages)
            self.metadata = None if self.metadata is None else list(self.metadata)
            self.borrowed = False

    def add(self, message: bytes, metadata: dict[bytes, bytes] | None) -> None:
        self._own()
        if metadata is not None and self.metadata is None:
            self.metadata = [None] * len(self.messages)
        self.messages.append(message)
        if self.metadata is not None:
            self.metadata.append(metadata)

    def extend(
        self, messages: Sequence[bytes], metadata: Sequence[dict[bytes, bytes] | None] | None
    ) -> None:
        """``add`` for many at once, without a step per message."""
        empty = not self.messages and self.metadata is None
        if empty and isinstance(messages, list) and isinstance(metadata, list | None):
            self.messages, self.metadata, self.borrowed = messages, metadata, True
            return
        self._own()
        if metadata is not None and self.metadata is None:
            self.metadata = [None] * len(self.messages)
        self.messages.extend(messages)
        if self.metadata is not None:
            self.metadata.extend([None] * len(messages) if metadata is None else metadata)


@dataclass
class Plan:
    """What one ``Log`` call would write, decided before anything is written."""

    appends: dict[tuple[bytes, int], AppendGroup] = field(default_factory=dict)
    # Per source category: events routed (good) and events without a route (bad).
    good: dict[bytes, int] = field(default_factory=dict)
    bad: dict[bytes, int] = field(default_factory=dict)
    # Per source category: events some route did not receive, its journal category being one
    # the journal may not create (they are also in ``bad`` when no route received them).
    over_limit: dict[bytes, int] = field(default_factory=dict)
    blank: int = 0
    nbytes: int = 0


class Route:
    """A compiled route: picks partitions for one journal category."""

    def __init__(self, config: RouteConfig, rng: random.Random) -> None:
        self.config = config
        self.target = None if config.target is None else _encode(config.target)
        self._partitions = config.partitions
        self._next = 0
        self._rng = rng
        self._delimiter = _encode(config.key_delimiter)

    def journal_category(self, category: bytes) -> bytes:
        return category if self.target is None else self.target

    def place(
        self,
        plan: Plan,
        category: bytes,
        messages: Sequence[bytes],
        metadata: Sequence[dict[bytes, bytes] | None] | None,
    ) -> None:
        target = self.journal_category(category)
        n = self._partitions
        if self.config.partitioner is Partitioner.KEY_HASH and n > 1:
            delimiter = self._delimiter
            crc = zlib.crc32
            for i, message in enumerate(messages):
                key = message.split(delimiter, 1)[0]
                group = _group(plan, target, crc(key) % n)
                group.add(message, None if metadata is None else metadata[i])
            return
        if self.config.partitioner is Partitioner.RANDOM:
            partition = self._rng.randrange(n)
        else:
            partition = self._next
            self._next = (partition + 1) % n
        _group(plan, target, partition).extend(messages, metadata)


def _group(plan: Plan, category: bytes, partition: int) -> AppendGroup:
    key = (category, partition)
    group = plan.appends.get(key)
    if group is None:
        group = plan.appends[key] = AppendGroup()
    return group


class Router:
    """Compiled routing table; ``plan`` is the per-call hot path.

    ``admit_category`` says whether the journal may write a journal category (creating it if
    new; ``journal.Journal.claim_category``); without it, every category may be written.
    """

    def __init__(
        self,
        config: RoutingConfig,
        rng: random.Random | None = None,
        *,
        admit_category: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.config = config
        self._admit = admit_category
        rng = rng or random.Random()
        self._exact: dict[str, list[Route]] = {}
        self._prefixes: list[tuple[bytes, list[Route]]] = []
        self._default: list[Route] = []
        prefixes: dict[str, list[Route]] = {}
        for route_config in config.routes:
            route = Route(route_config, rng)
            if route_config.category == DEFAULT_PATTERN:
                self._default.append(route)
            elif route_config.is_prefix:
                prefixes.setdefault(route_config.category[:-1], []).append(route)
            else:
                self._exact.setdefault(route_config.category, []).append(route)
        # Longest prefix first, so the first match is the most specific.
        self._prefixes = sorted(
            ((_encode(p), r) for p, r in prefixes.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._exact_bytes = {_encode(k): v for k, v in self._exact.items()}
        catch_all = RouteConfig(
            config.catch_all_category,
            partitions=config.catch_all_partitions,
            target=config.catch_all_category,
        )
        self._catch_all = Route(catch_all, rng)
        self._cache: dict[bytes, list[Route]] = {}

    def routes_for(self, category: bytes) -> list[Route]:
        """The routes that receive ``category`` (empty when unroutable)."""
        routes = self._cache.get(category)
        if routes is None:
            routes = self._match(category)
            if len(self._cache) >= self.config.max_cached_categories:
                self._cache.clear()
            self._cache[category] = routes
        return routes

    def _match(self, category: bytes) -> list[Route]:
        exact = self._exact_bytes.get(category)
        if exact:
            return exact
        for prefix, routes in self._prefixes:
            if category.startswith(prefix):
                return routes
        return self._default

    def all_routes(self) -> Iterable[Route]:
        for routes in self._exact.values():
            yield from routes
        for _, routes in self._prefixes:
            yield from routes
        yield from self._default

    def plan(self, batch: LogBatch) -> Plan:
        """Group a call's entries by category, then place each group."""
        categories = batch.categories
        metadata = batch.metadata
        by_category: dict[bytes, list[bytes]]
        with_metadata: dict[bytes, list[dict[bytes, bytes] | None]] = {}
        # The common call carries one category: route its columns as they are (a loop over a
        # 100,000-entry call would hold the event loop for a tenth of a second).
        if categories and categories.count(categories[0]) == len(categories):
            by_category = {categories[0]: batch.messages}
            if metadata is not None:
                with_metadata[categories[0]] = metadata
        else:
            by_category = {}
            for i, (category, message) in enumerate(zip(categories, batch.messages, strict=True)):
                messages = by_category.get(category)
                if messages is None:
                    messages = by_category[category] = []
                if metadata is not None:
                    with_metadata.setdefault(category, []).append(metadata[i])
                messages.append(message)

        # Counted by the decoder, in its worker thread for a large call.
        plan = Plan(nbytes=batch.message_bytes)
        for category, messages in by_category.items():
            metadata = with_metadata.get(category)
            routes = self.routes_for(category) if category.strip() else None
            if routes and self._admit is not None:
                admitted = [r for r in routes if self._admit(r.journal_category(category))]
                if len(admitted) < len(routes):
                    plan.over_limit[category] = len(messages)
                    routes = admitted
            if routes:
                plan.good[category] = len(messages)
                for route in routes:
                    route.place(plan, category, messages, metadata)
                continue
            if routes is None:
                plan.blank += len(messages)
            else:
                plan.bad[category] = len(messages)
            if self.config.unroutable is Unroutable.JOURNAL:
                self._catch_all.place(
                    plan, category, messages, _with_original(category, messages, metadata)
                )
        return plan

    @property
    def catch_all_category(self) -> bytes:
        """The journal category unroutable events go to under ``unroutable = "journal"``."""
        return self._catch_all.journal_category(b"")

    def retention_for(self, category: bytes) -> RouteConfig | None:
        """The route config whose retention applies to a journal category."""
        if category == self._catch_all.journal_category(b""):
            return None
        for route in self.all_routes():
            if route.target is not None and route.target == category:
                return route.config
        routes = self.routes_for(category)
        return routes[0].config if routes else None


def _with_original(
    category: bytes, messages: Sequence[bytes], metadata: Sequence[dict[bytes, bytes] | None] | None
) -> list[dict[bytes, bytes] | None]:
    result: list[dict[bytes, bytes] | None] = []
    for i in range(len(messages)):
        meta = dict(metadata[i] or {}) if metadata is not None else {}
        meta[METADATA_ORIGINAL_CATEGORY] = category
        result.append(meta)
    return result


def _encode(text: str) -> bytes:
    """Configuration text as the raw category bytes it names."""
    return text.encode("utf-8", "surrogateescape")
