"""What the ``Log`` path observes for metrics: bytes per category and outcome, and latency.

The message counts are fb303's (``scribe_compat.ScribeCounters``), read at scrape time; bytes
per category are kept nowhere else, so ``TrafficTally`` adds them up per call (per category,
never per message, in the common one-category call).  The append's latency goes to the
histogram ``scribe_pipeline_log_latency_seconds``.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Histogram

from pipeline.admission import Refusal
from pipeline.routing import Plan
from scribe_compat import LogBatch

# Outcomes a call's bytes are counted under, besides a Refusal's name.
RECEIVED = "received"
NO_ROUTE = "no_route"
BLANK_CATEGORY = "blank_category"


class TrafficTally:
    """Bytes per (category, outcome), and the Log latency histogram; the ``LogService`` hook."""

    def __init__(self, log_latency: Histogram) -> None:
        self._latency = log_latency
        self.bytes: defaultdict[tuple[bytes, str], int] = defaultdict(int)

    def refused(self, batch: LogBatch, plan: Plan, refusal: Refusal) -> None:
        """A call admitted no further (answered TRY_LATER): its routed bytes by reason."""
        sizes = _bytes_by_category(batch, plan)
        reason = refusal.name.lower()
        for category in plan.good:
            self.bytes[category, reason] += sizes.get(category, 0)

    def written(self, batch: LogBatch, plan: Plan, refusal: Refusal | None, seconds: float) -> None:
        """The journal append of an admitted call took ``seconds``; ``refusal`` if it failed."""
        self._latency.observe(seconds)
        if refusal is not None:
            self.refused(batch, plan, refusal)
            return
        sizes = _bytes_by_category(batch, plan)
        for category in plan.good:
            self.bytes[category, RECEIVED] += sizes.get(category, 0)
        for category in plan.bad:
            self.bytes[category, NO_ROUTE] += sizes.get(category, 0)
        if plan.blank:
            known = plan.good.keys() | plan.bad.keys()
            for category, size in sizes.items():
                if category not in known:
                    self.bytes[category, BLANK_CATEGORY] += size


def _bytes_by_category(batch: LogBatch, plan: Plan) -> dict[bytes, int]:
    # The router has summed the call's bytes already; a call of one category (the common one)
    # needs nothing more.  Only mixed calls pay a step per message.
    categories = plan.good.keys() | plan.bad.keys()
    if len(categories) == 1 and not plan.blank:
        return {next(iter(categories)): plan.nbytes}
    sizes: defaultdict[bytes, int] = defaultdict(int)
    for category, message in zip(batch.categories, batch.messages, strict=True):
        sizes[category] += len(message)
    return sizes
