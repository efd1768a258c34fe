"""Routing: Scribe's matching order (exact, longest prefix, default), fan-out, partitioners."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import pytest

from pipeline.routing import (
    METADATA_ORIGINAL_CATEGORY,
    Partitioner,
    RouteConfig,
    Router,
    RoutingConfig,
    Unroutable,
)
from scribe_compat import LogBatch


@dataclass
class Entry:
    category: bytes
    message: bytes
    metadata: dict[bytes, bytes] | None = None


def batch(*entries: Entry) -> LogBatch:
    metadata = [e.metadata for e in entries]
    return LogBatch(
        [e.category for e in entries],
        [e.message for e in entries],
        metadata if any(m is not None for m in metadata) else None,
    )


def router(*routes: RouteConfig, **kwargs: object) -> Router:
    return Router(RoutingConfig(routes=routes, **kwargs), random.Random(7))  # type: ignore[arg-type]


def test_exact_then_longest_prefix_then_default() -> None:
    r = router(
        RouteConfig("app.web", target="exact"),
        RouteConfig("app*", target="short"),
        RouteConfig("app.w*", target="long"),
        RouteConfig("default", target="fallback"),
    )
    assert [x.target for x in r.routes_for(b"app.web")] == [b"exact"]
    assert [x.target for x in r.routes_for(b"app.worker")] == [b"long"]
    assert [x.target for x in r.routes_for(b"app.db")] == [b"short"]
    assert [x.target for x in r.routes_for(b"other")] == [b"fallback"]


def test_fan_out_to_every_exact_route() -> None:
    r = router(RouteConfig("clicks", target="a"), RouteConfig("clicks", target="b"))
    plan = r.plan(batch(Entry(b"clicks", b"m1"), Entry(b"clicks", b"m2")))
    assert {k: g.messages for k, g in plan.appends.items()} == {
        (b"a", 0): [b"m1", b"m2"],
        (b"b", 0): [b"m1", b"m2"],
    }
    assert plan.good == {b"clicks": 2}


def test_round_robin_keeps_a_call_together_and_rotates_between_calls() -> None:
    r = router(RouteConfig("default", partitions=3))
    seen = []
    for _ in range(4):
        plan = r.plan(batch(Entry(b"c", b"1"), Entry(b"c", b"2")))
        ((key, group),) = plan.appends.items()
        assert group.messages == [b"1", b"2"]
        seen.append(key[1])
    assert seen == [0, 1, 2, 0]


def test_key_hash_is_stable_crc32_of_the_key() -> None:
    r = router(RouteConfig("default", partitions=4, partitioner=Partitioner.KEY_HASH))
    entries = [Entry(b"c", f"user{i}:payload".encode()) for i in range(20)]
    plan = r.plan(batch(*entries))
    for (category, partition), group in plan.appends.items():
        assert category == b"c"
        for message in group.messages:
            assert zlib.crc32(message.split(b":")[0]) % 4 == partition
    assert sum(len(g.messages) for g in plan.appends.values()) == 20


def test_random_partitioner_stays_in_range() -> None:
    r = router(RouteConfig("default", partitions=5, partitioner=Partitioner.RANDOM))
    for _ in range(50):
        ((key, _),) = r.plan(batch(Entry(b"c", b"x"))).appends.items()
        assert 0 <= key[1] < 5


def test_blank_and_unroutable_are_counted_and_dropped_by_default() -> None:
    r = router(RouteConfig("known"))
    plan = r.plan(
        batch(Entry(b"", b"a"), Entry(b"  ", b"b"), Entry(b"nope", b"c"), Entry(b"known", b"d"))
    )
    assert plan.blank == 2
    assert plan.bad == {b"nope": 1}
    assert list(plan.appends) == [(b"known", 0)]


def test_unroutable_can_be_journaled_to_a_catch_all_keeping_the_category() -> None:
    r = router(RouteConfig("known"), unroutable=Unroutable.JOURNAL, catch_all_category="lost")
    plan = r.plan(batch(Entry(b"nope", b"c", {b"k": b"v"}), Entry(b"", b"blank")))
    group = plan.appends[(b"lost", 0)]
    assert group.messages == [b"c", b"blank"]
    assert group.metadata == [
        {b"k": b"v", METADATA_ORIGINAL_CATEGORY: b"nope"},
        {METADATA_ORIGINAL_CATEGORY: b""},
    ]


def test_metadata_stays_aligned_with_messages() -> None:
    r = router(RouteConfig("default"))
    plan = r.plan(batch(Entry(b"c", b"1"), Entry(b"c", b"2", {b"a": b"b"}), Entry(b"c", b"3")))
    group = plan.appends[(b"c", 0)]
    assert group.messages == [b"1", b"2", b"3"]
    assert group.metadata == [None, {b"a": b"b"}, None]


def test_binary_categories_route_as_raw_bytes() -> None:
    r = router(RouteConfig("default"))
    plan = r.plan(batch(Entry(b"\x00\xff/..", b"\x00")))
    assert list(plan.appends) == [(b"\x00\xff/..", 0)]
    assert plan.nbytes == 1


def test_route_cache_is_bounded() -> None:
    r = router(RouteConfig("default"), max_cached_categories=10)
    for i in range(100):
        r.routes_for(f"c{i}".encode())
    assert len(r._cache) <= 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"category": ""},
        {"category": "a*b"},
        {"category": "*"},
        {"category": "x", "partitioner": Partitioner.KEY_HASH, "key_delimiter": ""},
    ],
)
def test_invalid_routes_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RouteConfig(**kwargs)  # type: ignore[arg-type]


def test_duplicate_route_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        RoutingConfig(routes=(RouteConfig("a"), RouteConfig("a")))


def test_a_one_category_call_is_placed_without_copying_its_columns() -> None:
    call = batch(*(Entry(b"app", b"m%d" % i, {b"k": b"v"}) for i in range(5)))
    (group,) = router(RouteConfig("app")).plan(call).appends.values()
    assert group.messages is call.messages and group.metadata is call.metadata


def test_a_borrowed_group_is_copied_before_more_is_added_to_it() -> None:
    # Two routes writing to the same journal category: both land in one group.
    call = batch(Entry(b"app", b"one"), Entry(b"app", b"two"))
    plan = router(RouteConfig("app"), RouteConfig("app", target="app")).plan(call)
    (group,) = plan.appends.values()
    assert group.messages == [b"one", b"two", b"one", b"two"]
    assert call.messages == [b"one", b"two"]  # the call's own column is left as it was
