"""Categories beyond ``journal.max_categories``: the router leaves them to the unroutable rule
and says so in the plan; the descriptor checks say what is wrong."""

from __future__ import annotations

import random
import resource

from pipeline.descriptors import DescriptorLimit, DescriptorWatch, check_limit
from pipeline.routing import (
    METADATA_ORIGINAL_CATEGORY,
    RouteConfig,
    Router,
    RoutingConfig,
    Unroutable,
)
from scribe_compat import LogBatch


class Claims:
    """The journal's ``claim_category``: the first ``limit`` categories asked for get in."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.claimed: list[bytes] = []

    def __call__(self, category: bytes) -> bool:
        if category in self.claimed:
            return True
        if len(self.claimed) >= self.limit:
            return False
        self.claimed.append(category)
        return True


def one_call(*categories: bytes) -> LogBatch:
    return LogBatch(list(categories), [b"m-" + c for c in categories], None)


def test_new_categories_beyond_the_limit_are_unroutable_and_counted() -> None:
    claims = Claims(2)
    router = Router(RoutingConfig(), random.Random(1), admit_category=claims)
    plan = router.plan(one_call(b"a", b"b", b"c", b"a", b"d"))
    assert set(plan.appends) == {(b"a", 0), (b"b", 0)}
    assert plan.good == {b"a": 2, b"b": 1}
    assert plan.bad == {b"c": 1, b"d": 1}
    assert plan.over_limit == {b"c": 1, b"d": 1}
    # Known categories keep their place in later calls.
    plan = router.plan(one_call(b"b", b"e"))
    assert set(plan.appends) == {(b"b", 0)}
    assert plan.over_limit == {b"e": 1}


def test_over_the_limit_goes_to_the_catch_all_when_configured() -> None:
    config = RoutingConfig(unroutable=Unroutable.JOURNAL, catch_all_category="spill")
    router = Router(config, random.Random(1), admit_category=Claims(1))
    plan = router.plan(one_call(b"a", b"b"))
    assert plan.appends[(b"a", 0)].messages == [b"m-a"]
    spilled = plan.appends[(b"spill", 0)]
    assert spilled.messages == [b"m-b"]
    assert spilled.metadata == [{METADATA_ORIGINAL_CATEGORY: b"b"}]
    assert plan.over_limit == {b"b": 1}
    assert router.catch_all_category == b"spill"


def test_fan_out_keeps_the_routes_that_fit() -> None:
    routes = (RouteConfig("clicks", target="kept"), RouteConfig("clicks", target="new"))
    claims = Claims(1)
    claims(b"kept")
    router = Router(RoutingConfig(routes=routes), random.Random(1), admit_category=claims)
    plan = router.plan(one_call(b"clicks"))
    assert set(plan.appends) == {(b"kept", 0)}
    assert plan.good == {b"clicks": 1}
    assert plan.bad == {}
    assert plan.over_limit == {b"clicks": 1}


def test_a_limit_too_low_is_one_line_naming_the_settings() -> None:
    assert check_limit(DescriptorLimit(1024, 1024, None), 128, 64) is None
    problem = check_limit(DescriptorLimit(256, 256, None), 128, 64)
    assert problem is not None and "\n" not in problem
    assert "limit is 256" in problem and "448" in problem
    assert "journal.max_open_partitions" in problem and "journal.min_free_descriptors" in problem


def test_descriptors_short_is_a_reason() -> None:
    class Busy(DescriptorWatch):
        used = 0

        def in_use(self) -> int:
            return self.used

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    watch = Busy(64)
    watch.used = soft - 100
    assert watch.problem() is None
    watch.used = soft - 10
    problem = watch.problem()
    assert problem is not None and "running short" in problem and str(soft) in problem
