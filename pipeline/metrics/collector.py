"""The custom collector: every metric but the two latency histograms, read at scrape time.

Nothing here runs on the hot path: ``collect`` reads the state the process keeps anyway —
fb303's counters (``scribe_compat.ScribeCounters``), the journal's pending bytes and failed
writers, the Scribe server's connections, each consumer member's positions and its sink's
counters — plus the bytes per category that ``TrafficTally`` adds up, and the partition files'
sizes that ``PipelineMetrics.scrape`` lists in a worker thread just before.  ``collect`` runs
in the trio thread (``generate_latest`` is called there), so it sees consistent values.

Every family is emitted on every scrape, with no samples when this process has nothing to say
(a ``consume`` process has no Scribe connections), so a dashboard's queries always name
metrics that exist.  Categories are label values bounded by ``CategoryLabels``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumers.coordination.zk_client import ConnectionState
from consumers.runtime import PartitionProgress
from journal import PartitionInfo
from pipeline.admission import Refusal
from pipeline.health import cassandra_connected, cassandra_needed, zookeeper_state
from pipeline.log_service import OVER_CATEGORY_LIMIT, RECEIVED_BAD, RECEIVED_GOOD
from pipeline.metrics.labels import OTHER, CategoryLabels
from pipeline.metrics.traffic import BLANK_CATEGORY, NO_ROUTE, RECEIVED, TrafficTally
from pipeline.process_view import Member, ProcessView
from scribe_compat.counters import OVERALL

PREFIX = "scribe_pipeline_"
# fb303's per-category counters and the (metric, reason) each feeds.
_REFUSALS = {refusal.value: refusal.name.lower() for refusal in Refusal}
_BAD = {RECEIVED_BAD: NO_ROUTE, OVER_CATEGORY_LIMIT: "over_category_limit"}
# fb303 counts blank categories overall only (Scribe's "received blank category").
_BLANK_OVERALL = "received blank category"
# A sink's counter for what it wrote, by sink: rows (Cassandra), messages (files), sent (forward).
_SINK_ROWS = ("rows written", "messages", "sent")
_SINK_LATENCY = (("0.5", "cassandra latency p50 us"), ("0.99", "cassandra latency p99 us"))
_SINK_LATENCY_MAX = "cassandra latency max us"


@dataclass
class PartitionFiles:
    """What the last listing of the journal's files found (``journal.list_partitions``)."""

    partitions: Sequence[PartitionInfo] = ()


class PipelineCollector(Collector):
    def __init__(
        self,
        view: ProcessView,
        traffic: TrafficTally | None,
        labels: CategoryLabels,
        files: PartitionFiles,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._view = view
        self._traffic = traffic
        self._label = labels
        self._files = files
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic_families()
        yield from self._journal_families()
        yield from self._consumer_families()
        yield from self._service_families()
        folded = GaugeMetricFamily(
            PREFIX + "category_labels_folded",
            "Categories sharing the label value 'other' (beyond metrics.max_category_labels).",
        )
        folded.add_metric([], self._label.folded)
        yield folded

    # -- Log traffic -------------------------------------------------------------------------

    def _traffic_families(self) -> Iterator[Metric]:
        received = _counter("received_messages", "Messages journaled, per category.", "category")
        received_bytes = _counter("received_bytes", "Bytes journaled, per category.", "category")
        refused = _counter(
            "refused_messages",
            "Messages answered TRY_LATER, per category and reason.",
            "category",
            "reason",
        )
        refused_bytes = _counter(
            "refused_bytes",
            "Bytes answered TRY_LATER, per category and reason.",
            "category",
            "reason",
        )
        bad = _counter(
            "bad_messages",
            "Messages not journaled under their category (no route, blank, over the category "
            "limit), per category and reason.",
            "category",
            "reason",
        )
        bad_bytes = _counter(
            "bad_bytes", "Bytes of messages without a route or category.", "category", "reason"
        )
        connections = GaugeMetricFamily(PREFIX + "connections", "Open Scribe connections.")
        daemon = self._view.daemon
        if daemon is not None:
            counts: defaultdict[tuple[str, str, str], float] = defaultdict(float)
            for key, count in daemon.service.counters.snapshot().items():
                scope, _, name = key.rpartition(":")
                if scope == OVERALL:
                    if name == _BLANK_OVERALL:
                        counts["bad", "", BLANK_CATEGORY] += count
                    continue
                label = self._label(scope.encode("utf-8", "surrogateescape"))
                if name == RECEIVED_GOOD:
                    counts["received", label, ""] += count
                elif name in _REFUSALS:
                    counts["refused", label, _REFUSALS[name]] += count
                elif name in _BAD:
                    counts["bad", label, _BAD[name]] += count
            for (kind, label, reason), value in sorted(counts.items()):
                if kind == "received":
                    received.add_metric([label], value)
                else:
                    (refused if kind == "refused" else bad).add_metric([label, reason], value)
            connections.add_metric([], daemon.server.connection_count)
        if self._traffic is not None:
            sizes: defaultdict[tuple[str, str], float] = defaultdict(float)
            for (raw, outcome), nbytes in list(self._traffic.bytes.items()):
                label = "" if outcome == BLANK_CATEGORY else self._label(raw)
                sizes[label, outcome] += nbytes
            for (label, outcome), value in sorted(sizes.items()):
                if outcome == RECEIVED:
                    received_bytes.add_metric([label], value)
                elif outcome in (NO_ROUTE, BLANK_CATEGORY):
                    bad_bytes.add_metric([label, outcome], value)
                else:
                    refused_bytes.add_metric([label, outcome], value)
        yield from (received, received_bytes, refused, refused_bytes, bad, bad_bytes, connections)

    # -- the journal -------------------------------------------------------------------------

    def _journal_families(self) -> Iterator[Metric]:
        size = _partition_gauge("journal_bytes", "Bytes of segment files, per partition.")
        segments = _partition_gauge("journal_segments", "Segment files, per partition.")
        hwm = _partition_gauge(
            "journal_high_water_mark",
            "The next offset after the durable messages readers may see, per partition.",
        )
        per: defaultdict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for info in self._files.partitions:
            values = per[self._partition_labels(info.category, info.partition)]
            values[0] += info.size_bytes
            values[1] += info.segments
            values[2] += info.high_water_mark or 0
        for labels, (nbytes, nsegments, mark) in sorted(per.items()):
            size.add_metric(list(labels), nbytes)
            segments.add_metric(list(labels), nsegments)
            hwm.add_metric(list(labels), mark)
        pending = GaugeMetricFamily(
            PREFIX + "journal_pending_bytes", "Bytes accepted and not yet durable."
        )
        failed = GaugeMetricFamily(
            PREFIX + "journal_failed_writers",
            "Partitions that cannot acknowledge appends (failed, refused or unavailable).",
        )
        daemon = self._view.daemon
        if daemon is not None:
            pending.add_metric([], daemon.service.journal.pending_bytes)
            failed.add_metric([], len(daemon.service.journal.failures()))
        yield from (size, segments, hwm, pending, failed)

    def _partition_labels(self, category: bytes, partition: int) -> tuple[str, str]:
        """Folded categories share one series: their partitions' values are summed."""
        label = self._label(category)
        return label, "" if label == OTHER else str(partition)

    # -- consumer members --------------------------------------------------------------------

    def _consumer_families(self) -> Iterator[Metric]:
        labels = ("group", "category", "partition")
        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag_messages",
            "Messages between a member's position and the high-water mark.",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            PREFIX + "consumer_lag_seconds",
            "While behind: seconds since the journal time of the last message delivered; "
            "0 when caught up.",
            labels=labels,
        )
        consumed = _counter("consumer_messages", "Messages delivered to the sink.", "group")
        consumed_bytes = _counter("consumer_bytes", "Bytes delivered to the sink.", "group")
        owned = _gauge("consumer_partitions_owned", "Partitions the member owns.", "group")
        rows = _counter("sink_rows", "Rows (Cassandra), messages (files) or sent events.", "group")
        batches = _counter("sink_batches", "Batches the sink made durable.", "group")
        retries = _counter("sink_retries", "Sink failures a partition paused and retried.", "group")
        dead = _counter("sink_dead_letters", "Messages sent to the dead-letter table.", "group")
        latency = GaugeMetricFamily(
            PREFIX + "sink_latency_seconds",
            "Sink request latency over its last requests (quantile 1 is the maximum).",
            labels=("group", "quantile"),
        )
        now = self._clock()
        for member in self._view.members:
            group = member.section.name
            metrics = member.runtime.metrics()
            sink: Mapping[str, int] = metrics["sink"]
            consumed.add_metric([group], metrics["messages consumed"])
            consumed_bytes.add_metric([group], metrics["bytes consumed"])
            owned.add_metric([group], metrics["partitions owned"])
            rows.add_metric([group], next((sink[k] for k in _SINK_ROWS if k in sink), 0))
            batches.add_metric([group], metrics["batches"])
            retries.add_metric([group], metrics["sink retries"])
            dead.add_metric([group], sink.get("dead letters", 0))
            for quantile, key in (*_SINK_LATENCY, ("1", _SINK_LATENCY_MAX)):
                if key in sink:
                    latency.add_metric([group, quantile], sink[key] / 1e6)
            for labels_of, (messages, seconds) in self._lags(member, now).items():
                lag.add_metric([group, *labels_of], messages)
                if seconds is not None:
                    lag_s.add_metric([group, *labels_of], seconds)
        yield from (lag, lag_s, consumed, consumed_bytes, owned, rows, batches, retries, dead)
        yield latency

    def _lags(
        self, member: Member, now: float
    ) -> dict[tuple[str, str], tuple[float, float | None]]:
        out: dict[tuple[str, str], tuple[float, float | None]] = {}
        for progress in member.runtime.progress():
            if progress.lag is None:
                continue
            key = self._partition_labels(progress.pid.category, progress.pid.partition)
            messages, seconds = out.get(key, (0.0, 0.0))
            behind = _seconds_behind(progress, now)
            out[key] = (
                messages + progress.lag,
                None if behind is None or seconds is None else max(seconds, behind),
            )
        return out

    # -- ZooKeeper and Cassandra ---------------------------------------------------------------

    def _service_families(self) -> Iterator[Metric]:
        zookeeper = _gauge(
            "zookeeper_connected",
            "1 while the member's ZooKeeper session is connected (coordination = zookeeper).",
            "group",
        )
        for member in self._view.members:
            state = zookeeper_state(member)
            if state is not None:
                zookeeper.add_metric(
                    [member.section.name], 1.0 if state is ConnectionState.CONNECTED else 0.0
                )
        cassandra = GaugeMetricFamily(
            PREFIX + "cassandra_connected",
            "1 while the process's Cassandra session is open (groups with sink = cassandra).",
        )
        if cassandra_needed(self._view):
            cassandra.add_metric([], 1.0 if cassandra_connected(self._view) else 0.0)
        yield from (zookeeper, cassandra)


def _seconds_behind(progress: PartitionProgress, now: float) -> float | None:
    if progress.lag == 0:
        return 0.0
    if progress.delivered_us is None:
        return None  # nothing delivered yet: how far behind is not known
    return max(0.0, now - progress.delivered_us / 1e6)


def _counter(name: str, documentation: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, labels=labels)


def _partition_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=("category", "partition"))


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=labels)
