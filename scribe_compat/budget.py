"""The server-wide budget of bytes buffered for calls that are still arriving.

Each connection may always hold one read (``receive_size``) of its own; a connection in the
middle of a message reserves, before its next read, as many bytes from this budget as it has
buffered, and gives them back once the message has been answered.  So the budget bounds what
all connections together hold for incomplete calls, whatever sizes their frames declare, and a
connection that finds it spent waits (within its read timeout) instead of growing memory.
"""

from __future__ import annotations

import trio


class ReceiveBudget:
    """``total`` bytes shared by all connections; ``in_use`` of them are reserved."""

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("the receive budget must be positive")
        self.total = total
        self.in_use = 0
        # How often a connection found the budget spent and had to wait: the counter an
        # operator watches to see whether the budget is too small for the traffic.
        self.waits = 0
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def free(self) -> int:
        return max(0, self.total - self.in_use)

    def take(self, want: int) -> int:
        """Reserve up to ``want`` bytes at once; returns how many (0 when the budget is spent)."""
        granted = min(want, self.free)
        self.in_use += granted
        return granted

    def release(self, amount: int) -> None:
        """Give back ``amount`` reserved bytes and wake whoever waits for them."""
        if amount > self.in_use:
            raise ValueError(f"releasing {amount} bytes of {self.in_use} reserved")
        self.in_use -= amount
        if self._lot:
            self._lot.unpark_all()

    def resize(self, total: int) -> None:
        """A new total (on reload); reservations above it are kept until given back."""
        if total <= 0:
            raise ValueError("the receive budget must be positive")
        self.total = total
        if self._lot:
            self._lot.unpark_all()

    async def wait_for_room(self) -> None:
        """Return once some of the budget is free (at the next checkpoint if it already is)."""
        if self.free:
            await trio.lowlevel.checkpoint()
            return
        self.waits += 1
        while not self.free:
            await self._lot.park()


class Reservation:
    """One connection's share of a ``ReceiveBudget``: it follows the bytes the connection has
    buffered, as far as the budget allows."""

    def __init__(self, budget: ReceiveBudget) -> None:
        self.budget = budget
        self.held = 0

    def cover(self, buffered: int) -> int:
        """Hold exactly ``buffered`` bytes if the budget allows; returns how many of them
        remain uncovered (0 when all are).  Costs nothing while nothing is buffered."""
        held = self.held
        if buffered < held:
            self.budget.release(held - buffered)
            self.held = buffered
        elif buffered > held:
            self.held = held + self.budget.take(buffered - held)
        return buffered - self.held

    def release(self) -> None:
        """Give everything back (the connection is closing)."""
        if self.held:
            self.budget.release(self.held)
            self.held = 0
