"""The server-wide receive budget and each connection's reservation, without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from scribe_compat.budget import ReceiveBudget, Reservation


def test_take_grants_what_is_free_and_release_gives_it_back() -> None:
    budget = ReceiveBudget(100)
    assert budget.take(60) == 60
    assert budget.take(60) == 40
    assert budget.take(1) == 0
    assert (budget.in_use, budget.free) == (100, 0)
    budget.release(70)
    assert (budget.in_use, budget.free) == (30, 70)
    with pytest.raises(ValueError):
        budget.release(31)


def test_a_reservation_follows_what_its_connection_buffers() -> None:
    budget = ReceiveBudget(100)
    first, second = Reservation(budget), Reservation(budget)
    assert first.cover(0) == 0 and budget.in_use == 0  # nothing buffered costs nothing
    assert first.cover(70) == 0
    assert second.cover(50) == 20  # only 30 were left
    assert budget.in_use == 100
    assert first.cover(10) == 0  # the message was answered: 60 go back
    assert second.cover(50) == 0
    assert budget.in_use == 60
    first.release()
    second.release()
    assert budget.in_use == 0


async def test_waiters_wake_when_room_is_given_back() -> None:
    budget = ReceiveBudget(10)
    holder = Reservation(budget)
    holder.cover(10)
    woke = trio.Event()

    async def wait() -> None:
        await budget.wait_for_room()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set() and budget.waits == 1
        holder.cover(4)
        with trio.fail_after(1):
            await woke.wait()
    assert budget.free == 6


async def test_a_larger_total_on_reload_wakes_the_waiters() -> None:
    budget = ReceiveBudget(10)
    budget.take(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(budget.wait_for_room)
        await trio.testing.wait_all_tasks_blocked()
        budget.resize(20)
    assert budget.take(20) == 10


async def test_waiting_with_room_free_is_still_a_checkpoint() -> None:
    budget = ReceiveBudget(10)
    with trio.CancelScope() as scope:
        scope.cancel()
        await budget.wait_for_room()
    assert scope.cancelled_caught
    assert budget.waits == 0
