"""Prometheus metrics of a daemon (``/metrics``): a registry per daemon
(``registry.PipelineMetrics``), a collector that reads at scrape time what the process keeps
anyway (``collector``), and the two latency histograms of the Log path (``traffic``,
``fsync``).  Names and units follow Prometheus' conventions (``scribe_pipeline_`` prefix,
``_total``, ``_seconds``, ``_bytes``); category label values are bounded (``labels``).

Only what the configuration needs is imported here (``pipeline.config`` imports this package,
and the collector imports the application's modules).
"""

from pipeline.metrics.config import MetricsConfig
from pipeline.metrics.labels import OTHER, CategoryLabels

__all__ = ["OTHER", "CategoryLabels", "MetricsConfig"]
