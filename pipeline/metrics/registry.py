"""One daemon's metrics: its own registry (never the global one, so a test may run several
daemons in one process), the two latency histograms, and the scrape."""

from __future__ import annotations

from collections.abc import Iterator

import trio
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from journal import FileIO, list_partitions
from pipeline.health import readiness
from pipeline.metrics.collector import PartitionFiles, PipelineCollector
from pipeline.metrics.config import MetricsConfig
from pipeline.metrics.fsync import TimedFileIO
from pipeline.metrics.labels import CategoryLabels
from pipeline.metrics.traffic import TrafficTally
from pipeline.process_view import ProcessView

# Durable acknowledgements take one fdatasync, 0.2-20 ms on SSDs; the buckets resolve that
# range finely and still place a stalled disk (seconds).
LOG_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PipelineMetrics:
    def __init__(self, config: MetricsConfig, view: ProcessView) -> None:
        self.config = config
        self.view = view
        # No ``_created`` series beside the histograms: in the text format they are one more
        # gauge per histogram that nobody graphs.  The library's switch is process-wide (every
        # daemon's registry in this process wants it off) and untyped.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self._log_latency = Histogram(
            "scribe_pipeline_log_latency_seconds",
            "Time of a Log call's journal append, until durable under the journal's mode.",
            buckets=LOG_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._fsync = Histogram(
            "scribe_pipeline_journal_fsync_seconds",
            "Time of each fdatasync of the journal's files.",
            buckets=FSYNC_BUCKETS,
            registry=self.registry,
        )
        self.traffic = TrafficTally(self._log_latency) if view.runs_server else None
        self._files = PartitionFiles()
        self.registry.register(
            PipelineCollector(
                view, self.traffic, CategoryLabels(config.max_category_labels), self._files
            )
        )
        self.registry.register(_ReadinessCollector(view))

    def file_io(self, inner: FileIO | None) -> FileIO:
        """The journal's system calls with every fdatasync timed."""
        return TimedFileIO(inner or FileIO(), self._fsync.observe)

    async def scrape(self) -> bytes:
        """The exposition text: the partition files listed in a worker thread (it stats every
        segment), then every family read in this thread."""
        journal_dir = self.view.config.journal.dir
        if journal_dir.is_dir():
            self._files.partitions = await trio.to_thread.run_sync(list_partitions, journal_dir)
        return generate_latest(self.registry)


class _ReadinessCollector(Collector):
    """``scribe_pipeline_ready``: what ``/readyz`` says, as 1 or 0."""

    def __init__(self, view: ProcessView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "scribe_pipeline_ready", "1 when /readyz answers 200 (see pipeline.health), else 0."
        )
        ready.add_metric([], 1.0 if readiness(self._view).ready else 0.0)
        yield ready
