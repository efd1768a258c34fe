"""The ``[metrics]`` table: what the Prometheus endpoint exposes and what it may cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval


@dataclass(frozen=True)
class MetricsConfig:
    # Off: no /metrics route and no latency observation on the Log path (the benchmark's
    # baseline).  Everything else the endpoint shows is read at scrape time and costs nothing
    # while nobody scrapes.
    enabled: bool = True
    # Categories that get a label value of their own; the rest share "other" (and are counted
    # in scribe_pipeline_category_labels_folded).  Each category costs a dozen series per
    # partition; Prometheus' guidance is to keep a target under ~10,000 series, and 100
    # categories stay well under that.  At most 10,000, the journal's default category limit.
    max_category_labels: Annotated[int, Interval(ge=1, le=10_000)] = 100
