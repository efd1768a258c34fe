"""Capped exponential backoff with jitter, shared by the runtime and the sinks."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial * 2**n`` capped at ``maximum``, each jittered down to half ("equal jitter").

    Jitter keeps many partitions (or many forwarders) from retrying a recovering service in
    lockstep; keeping at least half the delay keeps the cap meaningful.
    """

    def __init__(
        self, initial_s: float, maximum_s: float, rng: random.Random | None = None
    ) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._rng = rng if rng is not None else random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one failed attempt."""
        ceiling = min(self._maximum, self._initial * float(2 ** min(self.attempts, 62)))
        self.attempts += 1
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0
