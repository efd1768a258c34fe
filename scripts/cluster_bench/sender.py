"""A steady Scribe sender: ``rate`` messages a second over several categories, paced by the
clock, each category's messages numbered densely from 0 (``b"<seq>"``), a call resent until it is
acknowledged, as Scribe's clients do; so what was acknowledged is, per category, the numbers
below ``acked[category]``."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from scribe_compat import AsyncScribeClient, ClientError, LogEntry, ResultCode

# One call every 50 ms: 100 messages a call at 2,000/s, about what one Scribe client batches.
INTERVAL_S = 0.05
# Connect and per-call timeout: the server answers within milliseconds when it is up.
CALL_TIMEOUT_S = 5.0


@dataclass
class Sender:
    address: tuple[str, int]
    categories: list[bytes]
    rate: float
    acked: dict[bytes, int] = field(default_factory=dict)
    failures: int = 0

    def _next_call(self, tick: int) -> list[LogEntry]:
        per_call = max(1, round(self.rate * INTERVAL_S))
        base, extra = divmod(per_call, len(self.categories))
        entries: list[LogEntry] = []
        for index, category in enumerate(self.categories):
            # The remainder goes to a different category each call, so every one gets its share.
            count = base + (1 if (index - tick) % len(self.categories) < extra else 0)
            first = self.acked.get(category, 0)
            entries.extend(LogEntry(category, b"%d" % seq) for seq in range(first, first + count))
        return entries

    async def run(self) -> None:
        """Send until cancelled."""
        client: AsyncScribeClient | None = None
        next_at = trio.current_time()
        tick = 0
        try:
            while True:
                entries = self._next_call(tick)
                while True:  # the same call until it is acknowledged
                    try:
                        if client is None:
                            client = await AsyncScribeClient.connect(*self.address, CALL_TIMEOUT_S)
                        if await client.log(entries) is ResultCode.OK:
                            break
                    except ClientError:
                        if client is not None:
                            with trio.CancelScope(shield=True):
                                await client.aclose()
                        client = None
                    self.failures += 1
                    await trio.sleep(INTERVAL_S)
                for entry in entries:
                    self.acked[entry.category] = int(entry.message) + 1
                tick += 1
                # Behind schedule (a slow call): start again from now rather than burst.
                next_at = max(next_at + INTERVAL_S, trio.current_time())
                await trio.sleep_until(next_at)
        finally:
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()
