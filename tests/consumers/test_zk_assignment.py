"""``plan_assignment``: the ZooKeeper coordinator's assignment, without ZooKeeper."""

from __future__ import annotations

import random

from consumers.coordination.zookeeper import plan_assignment
from journal import PartitionId


def pids(n: int) -> list[PartitionId]:
    return [PartitionId(b"c", i) for i in range(n)]


def check_balanced(plan: dict[str, set[PartitionId]], partitions: list[PartitionId]) -> None:
    sizes = [len(owned) for owned in plan.values()]
    assert max(sizes) - min(sizes) <= 1
    assigned = [pid for owned in plan.values() for pid in owned]
    assert sorted(assigned, key=lambda p: p.partition) == partitions  # each exactly once


def test_fresh_group_is_balanced_and_deterministic() -> None:
    plan = plan_assignment(["b", "a", "c"], pids(8), {})
    check_balanced(plan, pids(8))
    assert plan == plan_assignment(["c", "a", "b"], reversed(pids(8)), {})


def test_sticky_when_a_member_joins() -> None:
    owners = dict.fromkeys(pids(6), "a")
    plan = plan_assignment(["a", "b"], pids(6), owners)
    assert plan["a"] == set(pids(3))  # a keeps the first half, gives the rest away
    assert plan["b"] == set(pids(6)[3:])


def test_only_the_dead_members_partitions_move() -> None:
    parts = pids(8)
    before = plan_assignment(["a", "b", "c"], parts, {})
    owners = {pid: name for name, owned in before.items() for pid in owned}
    after = plan_assignment(["a", "c"], parts, owners)
    check_balanced(after, parts)
    for name in ("a", "c"):
        assert before[name] <= after[name]


def test_extra_partitions_go_to_those_holding_most() -> None:
    owners = {**dict.fromkeys(pids(5)[:3], "b"), **dict.fromkeys(pids(5)[3:], "a")}
    plan = plan_assignment(["a", "b"], pids(5), owners)
    assert plan["b"] == set(pids(5)[:3]) and plan["a"] == set(pids(5)[3:])


def test_random_views_always_balanced_and_keep_fair_shares() -> None:
    rng = random.Random(4)
    for _ in range(300):
        members = [f"m{i}" for i in range(rng.randint(1, 5))]
        parts = pids(rng.randint(0, 20))
        owners = {p: rng.choice([*members, "gone"]) for p in parts if rng.random() < 0.7}
        plan = plan_assignment(members, parts, owners)
        check_balanced(plan, parts)
        share = -(-len(parts) // len(members))
        for name in members:
            held = {p for p, o in owners.items() if o == name}
            assert len(plan[name] & held) >= min(len(held), len(parts) // len(members))
            assert len(plan[name]) <= share


def test_no_members_no_plan() -> None:
    assert plan_assignment([], pids(3), {}) == {}
