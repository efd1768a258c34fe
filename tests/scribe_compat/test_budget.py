"""The server-wide receive budget and each connection's reservation, without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from scribe_compat.budget import ReceiveBudget, Reservation


async def test_a_reservation_that_fits_is_granted_at_once() -> None:
    budget = ReceiveBudget(100)
    first, second = Reservation(budget), Reservation(budget)
    await first.hold(60)
    await second.hold(40)
    assert (budget.in_use, budget.free, budget.waits) == (100, 0, 0)
    first.release()
    assert (budget.in_use, first.held) == (40, 0)
    second.release()
    assert budget.in_use == 0


async def test_reservations_are_granted_first_come_first_served() -> None:
    budget = ReceiveBudget(100)
    holder = Reservation(budget)
    await holder.hold(90)
    order: list[int] = []

    async def reserve(amount: int) -> None:
        await budget.reserve(amount)
        order.append(amount)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reserve, 80)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reserve, 5)  # would fit now, but waits behind the larger one
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and budget.waiting == 2
        holder.release()
    assert sorted(order) == [5, 80]  # both granted at once (the order they run is trio's)
    assert (budget.in_use, budget.waits) == (85, 2)


async def test_a_cancelled_wait_leaves_the_queue_and_lets_the_next_one_in() -> None:
    budget = ReceiveBudget(100)
    await budget.reserve(50)
    got_small = trio.Event()

    async def small() -> None:
        await budget.reserve(50)
        got_small.set()

    big_scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_reserve_in, big_scope, budget, 100)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(small)
        await trio.testing.wait_all_tasks_blocked()
        assert not got_small.is_set()
        big_scope.cancel()
        with trio.fail_after(1):
            await got_small.wait()
    assert (budget.in_use, budget.waiting) == (100, 0)


async def _reserve_in(scope: trio.CancelScope, budget: ReceiveBudget, amount: int) -> None:
    with scope:
        await budget.reserve(amount)


async def test_a_larger_total_on_reload_lets_waiters_in() -> None:
    budget = ReceiveBudget(10)
    await budget.reserve(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(budget.reserve, 10)
        await trio.testing.wait_all_tasks_blocked()
        budget.resize(20)
    assert budget.in_use == 20


async def test_reserving_is_a_checkpoint_and_never_more_than_the_total() -> None:
    budget = ReceiveBudget(10)
    with trio.CancelScope() as scope:
        scope.cancel()
        await budget.reserve(5)
    assert scope.cancelled_caught and budget.in_use == 0
    with pytest.raises(ValueError):
        await budget.reserve(11)
    with pytest.raises(ValueError):
        budget.release(1)
