"""The server-wide budget of bytes buffered for calls that are still arriving.

Each connection may always hold one read (``receive_size``) of its own.  A message too large
for that reserves, before the connection reads on, budget for its whole size: the length its
frame declares, or ``max_message_bytes`` for an unframed message, whose end is known only when
it is reached.  The reservation is held until the call has been answered.  So:

* the bytes all connections hold for incomplete calls are bounded, whatever they declare, and
  grow only as data arrives (a reservation is a count, not memory);
* every message that starts reading past its allowance can finish: the budget is never spread
  over messages none of which has enough to complete (which would stall them all until their
  read timeouts);
* reservations are granted first come, first served, so a large call is not starved by a
  stream of smaller ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import trio


@dataclass(eq=False)
class _Waiter:
    amount: int
    granted: trio.Event = field(default_factory=trio.Event)


class ReceiveBudget:
    """``total`` bytes shared by all connections; ``in_use`` of them are reserved."""

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("the receive budget must be positive")
        self.total = total
        self.in_use = 0
        # How often a reservation had to wait: the counter an operator watches to see whether
        # the budget is too small for the traffic.
        self.waits = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def free(self) -> int:
        return max(0, self.total - self.in_use)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def reserve(self, amount: int) -> None:
        """Hold ``amount`` bytes, waiting behind earlier reservations until they fit."""
        if amount > self.total:
            raise ValueError(f"{amount} bytes can never fit a budget of {self.total}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._waiters and amount <= self.free:
            self.in_use += amount
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(amount)
        self._waiters.append(waiter)
        self.waits += 1
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():
                self.in_use -= amount  # granted as the wait was cancelled: give it back
            else:
                self._waiters.remove(waiter)
            self._grant()
            raise

    def release(self, amount: int) -> None:
        """Give back ``amount`` reserved bytes; the reservations waiting first get them."""
        if amount > self.in_use:
            raise ValueError(f"releasing {amount} bytes of {self.in_use} reserved")
        self.in_use -= amount
        self._grant()

    def resize(self, total: int) -> None:
        """A new total (on reload); reservations above it are kept until given back."""
        if total <= 0:
            raise ValueError("the receive budget must be positive")
        self.total = total
        self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0].amount <= self.free:
            waiter = waiters.popleft()
            self.in_use += waiter.amount
            waiter.granted.set()


class Reservation:
    """What one connection holds of a ``ReceiveBudget``: nothing, or one message's size."""

    def __init__(self, budget: ReceiveBudget) -> None:
        self.budget = budget
        self.held = 0

    async def hold(self, amount: int) -> None:
        """Reserve ``amount`` bytes (the connection holds nothing yet)."""
        if self.held:
            raise RuntimeError("a reservation is already held")
        await self.budget.reserve(amount)
        self.held = amount

    def release(self) -> None:
        """Give everything back (the call has been answered, or the connection is closing)."""
        if self.held:
            self.budget.release(self.held)
            self.held = 0
