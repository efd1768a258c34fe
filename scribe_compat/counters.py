"""Scribe's counters, named as Scribe names them so dashboards and ``scribe_ctrl counters`` work.

Each count exists per category (``<category>:<name>``) and overall (``scribe_overall:<name>``);
``incr`` updates both, as Scribe does.  Increments are dictionary updates keyed by the raw
category bytes; text is made only by ``snapshot`` (undecodable bytes as ``\\xNN`` escapes).
"""

from __future__ import annotations

from collections import defaultdict

RECEIVED_GOOD = "received good"
RECEIVED_BAD = "received bad"
RECEIVED_BLANK_CATEGORY = "received blank category"
DENIED_FOR_RATE = "denied for rate"
DENIED_FOR_QUEUE_SIZE = "denied for queue size"
RETRIES = "retries"
REQUEUE = "requeue"
LOST = "lost"
IGNORED = "ignored"
BYTES_LOST = "bytes lost"
SENT = "sent"

COUNTER_NAMES = (
    RECEIVED_GOOD,
    RECEIVED_BAD,
    RECEIVED_BLANK_CATEGORY,
    DENIED_FOR_RATE,
    DENIED_FOR_QUEUE_SIZE,
    RETRIES,
    REQUEUE,
    LOST,
    IGNORED,
    BYTES_LOST,
    SENT,
)

OVERALL = "scribe_overall"


class ScribeCounters:
    """Per-category and overall counters (not thread-safe: use from one trio thread)."""

    def __init__(self) -> None:
        self._by_category: defaultdict[tuple[bytes, str], int] = defaultdict(int)
        self._overall: defaultdict[str, int] = defaultdict(int)

    def incr(self, category: bytes, name: str, amount: int = 1) -> None:
        """Add ``amount`` to ``<category>:<name>`` and to ``scribe_overall:<name>``."""
        self._by_category[category, name] += amount
        self._overall[name] += amount

    def incr_overall(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to ``scribe_overall:<name>`` only (e.g. blank categories)."""
        self._overall[name] += amount

    def get(self, key: str) -> int:
        return self.snapshot().get(key, 0)

    def snapshot(self) -> dict[str, int]:
        """Every counter as ``name: value``, the way fb303's getCounters reports them."""
        out: dict[str, int] = {}
        for (category, name), value in self._by_category.items():
            key = f"{category.decode('utf-8', 'backslashreplace')}:{name}"
            out[key] = out.get(key, 0) + value
        for name, value in self._overall.items():
            out[f"{OVERALL}:{name}"] = value
        return out
