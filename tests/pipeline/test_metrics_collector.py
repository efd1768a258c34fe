"""The metrics collector over plain fakes at its I/O boundary: fb303 counters (a real
``ScribeCounters`` filled as the Log path fills it), the journal's partition files (the
``PartitionInfo`` records ``list_partitions`` returns), and consumer members (runtimes that
report fixed positions and counters).  Every scrape is parsed back as Prometheus reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers import ConsumerRuntime
from consumers.coordination.zk_client import ConnectionState
from consumers.runtime import PartitionProgress
from journal import PartitionId, PartitionInfo
from pipeline.config import PipelineConfig, from_mapping
from pipeline.daemon import Daemon
from pipeline.log_service import OVER_CATEGORY_LIMIT, RECEIVED_BAD, RECEIVED_BLANK, RECEIVED_GOOD
from pipeline.metrics import OTHER, CategoryLabels, MetricsConfig
from pipeline.metrics.collector import PartitionFiles, PipelineCollector
from pipeline.metrics.registry import PipelineMetrics
from pipeline.metrics.traffic import BLANK_CATEGORY, NO_ROUTE, RECEIVED
from pipeline.process_view import Member, ProcessView
from pipeline.storage import Storage
from scribe_compat import ScribeCounters

NOW = 1_700_000_000.0
PREFIX = "scribe_pipeline_"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Every family the collector emits, with its Prometheus type.
FAMILIES = {
    "received_messages": "counter",
    "received_bytes": "counter",
    "refused_messages": "counter",
    "refused_bytes": "counter",
    "bad_messages": "counter",
    "bad_bytes": "counter",
    "connections": "gauge",
    "journal_bytes": "gauge",
    "journal_segments": "gauge",
    "journal_high_water_mark": "gauge",
    "journal_pending_bytes": "gauge",
    "journal_failed_writers": "gauge",
    "consumer_lag_messages": "gauge",
    "consumer_lag_seconds": "gauge",
    "consumer_messages": "counter",
    "consumer_bytes": "counter",
    "consumer_partitions_owned": "gauge",
    "sink_rows": "counter",
    "sink_batches": "counter",
    "sink_retries": "counter",
    "sink_dead_letters": "counter",
    "sink_latency_seconds": "gauge",
    "zookeeper_connected": "gauge",
    "cassandra_connected": "gauge",
    "category_labels_folded": "gauge",
}


# -- fakes -------------------------------------------------------------------------------------


class FakeJournal:
    def __init__(self, pending_bytes: int = 0, failures: list[Any] | None = None) -> None:
        self.pending_bytes = pending_bytes
        self._failures = failures or []

    def failures(self) -> list[Any]:
        return self._failures


def fake_daemon(counters: ScribeCounters, *, connections: int = 0, pending: int = 0) -> Daemon:
    service = SimpleNamespace(
        counters=counters,
        journal=FakeJournal(pending),
        admission=SimpleNamespace(stopping=False, disk_problem=lambda: None),
    )
    return cast(
        Daemon,
        SimpleNamespace(service=service, server=SimpleNamespace(connection_count=connections)),
    )


@dataclass
class FakeSession:
    """A coordinator holding a ZooKeeper session (what the collector asks of one)."""

    connection_state: ConnectionState = ConnectionState.CONNECTED


@dataclass
class FakeRuntime:
    progresses: list[PartitionProgress] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    coordinator: object = field(default_factory=object)

    def progress(self) -> list[PartitionProgress]:
        return self.progresses

    def metrics(self) -> dict[str, Any]:
        return {
            "messages consumed": 0,
            "bytes consumed": 0,
            "partitions owned": len(self.progresses),
            "batches": 0,
            "sink retries": 0,
            "sink": {},
            **self.counters,
        }


def progress(
    category: bytes,
    partition: int,
    lag: int | None,
    delivered_s: float | None = None,
    *,
    paused: bool = False,
) -> PartitionProgress:
    delivered_us = None if delivered_s is None else int(delivered_s * 1e6)
    return PartitionProgress(PartitionId(category, partition), 10, 10, lag, delivered_us, paused)


def partition_info(
    category: bytes, partition: int, hwm: int, size: int, segments: int
) -> PartitionInfo:
    return PartitionInfo(
        category=category,
        partition=partition,
        path=Path("/nonexistent") / category.hex() / str(partition),
        segments=segments,
        earliest_offset=0,
        high_water_mark=hwm,
        size_bytes=size,
        last_timestamp_ms=None,
        clean_shutdown=True,
    )


def config_with_groups() -> PipelineConfig:
    return from_mapping(
        {
            "consumers": [
                {
                    "name": "archive",
                    "categories": ["*"],
                    "sink": "files",
                    "files": {"file_path": "/tmp/f"},
                },
                {"name": "rows", "categories": ["*"], "sink": "cassandra", "cassandra": {}},
            ]
        }
    )


def member(config: PipelineConfig, name: str, runtime: FakeRuntime) -> Member:
    section = next(s for s in config.consumers if s.name == name)
    return Member(section, cast(ConsumerRuntime, runtime))


def scrape(
    view: ProcessView,
    *,
    traffic: Any = None,
    partitions: list[PartitionInfo] | None = None,
    limit: int = 100,
) -> tuple[dict[str, str], Samples, CategoryLabels]:
    """The families (name: type) and samples of one scrape through the text format."""
    labels = CategoryLabels(limit)
    registry = CollectorRegistry(auto_describe=False)
    files = PartitionFiles(partitions or [])
    registry.register(PipelineCollector(view, traffic, labels, files, clock=lambda: NOW))
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        families[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return families, samples, labels


def sample(samples: Samples, name: str, **labels: str) -> float:
    key = (PREFIX + name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def server_view(counters: ScribeCounters, **daemon: int) -> ProcessView:
    return ProcessView(PipelineConfig(), runs_server=True, daemon=fake_daemon(counters, **daemon))


# -- names and units -----------------------------------------------------------------------------


def test_every_family_is_named_and_typed_by_prometheus_conventions() -> None:
    config = config_with_groups()
    runtime = FakeRuntime(
        [progress(b"a", 0, 3, NOW - 2)], {"sink": {"cassandra latency p50 us": 1}}
    )
    view = ProcessView(
        config,
        runs_server=True,
        daemon=fake_daemon(ScribeCounters()),
        members=[member(config, "archive", runtime)],
    )
    families, samples, _ = scrape(view)
    # The parser names counter families without their _total, as Prometheus does.
    assert families == {PREFIX + name: kind for name, kind in FAMILIES.items()}
    for name in families:
        assert not name.endswith("_total"), name
        unit = next((u for u in ("seconds", "bytes") if u in name), None)
        if unit is not None:
            assert name.endswith("_" + unit), f"{name}: the unit goes last"
    for sample_name, _labels in samples:
        family = max((f for f in families if sample_name.startswith(f)), key=len)
        if families[family] == "counter":
            assert sample_name == family + "_total", sample_name


def test_no_created_series_and_the_readiness_gauge_in_a_daemons_registry(tmp_path: Path) -> None:
    view = ProcessView(
        from_mapping({"journal": {"dir": str(tmp_path / "none")}}), runs_server=False
    )
    metrics = PipelineMetrics(MetricsConfig(), view)
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    assert "scribe_pipeline_journal_fsync_seconds_count 0.0" in text
    assert "scribe_pipeline_ready 1.0" in text


# -- values equal the state they read --------------------------------------------------------------


def test_log_path_counters_are_fb303s_by_category_and_reason() -> None:
    counters = ScribeCounters()
    counters.incr(b"alpha", RECEIVED_GOOD, 7)
    counters.incr(b"beta", RECEIVED_GOOD, 2)
    counters.incr(b"alpha", "denied for queue size", 3)
    counters.incr(b"beta", "denied for disk space", 4)
    counters.incr(b"nowhere", RECEIVED_BAD, 5)
    counters.incr(b"many", OVER_CATEGORY_LIMIT, 6)
    counters.incr_overall(RECEIVED_BLANK, 8)
    _, samples, _ = scrape(server_view(counters, connections=3, pending=4096))
    assert sample(samples, "received_messages_total", category="alpha") == 7
    assert sample(samples, "received_messages_total", category="beta") == 2
    assert sample(samples, "refused_messages_total", category="alpha", reason="queue") == 3
    assert sample(samples, "refused_messages_total", category="beta", reason="disk") == 4
    assert sample(samples, "bad_messages_total", category="nowhere", reason="no_route") == 5
    assert sample(samples, "bad_messages_total", category="many", reason="over_category_limit") == 6
    assert sample(samples, "bad_messages_total", category="", reason="blank_category") == 8
    assert sample(samples, "connections") == 3
    assert sample(samples, "journal_pending_bytes") == 4096
    assert sample(samples, "journal_failed_writers") == 0
    # The overall counters are not a category of their own.
    assert not any(("category", "scribe_overall") in labels for _, labels in samples)


def test_bytes_are_the_tallys_by_category_and_outcome() -> None:
    tally = SimpleNamespace(
        bytes={
            (b"alpha", RECEIVED): 1000,
            (b"alpha", "rate"): 30,
            (b"nowhere", NO_ROUTE): 40,
            (b"", BLANK_CATEGORY): 50,
        }
    )
    _, samples, _ = scrape(server_view(ScribeCounters()), traffic=tally)
    assert sample(samples, "received_bytes_total", category="alpha") == 1000
    assert sample(samples, "refused_bytes_total", category="alpha", reason="rate") == 30
    assert sample(samples, "bad_bytes_total", category="nowhere", reason="no_route") == 40
    assert sample(samples, "bad_bytes_total", category="", reason="blank_category") == 50


def test_journal_gauges_are_the_partition_files() -> None:
    files = [partition_info(b"alpha", 0, 120, 65_536, 2), partition_info(b"alpha", 1, 7, 900, 1)]
    _, samples, _ = scrape(server_view(ScribeCounters()), partitions=files)
    assert sample(samples, "journal_high_water_mark", category="alpha", partition="0") == 120
    assert sample(samples, "journal_bytes", category="alpha", partition="0") == 65_536
    assert sample(samples, "journal_segments", category="alpha", partition="0") == 2
    assert sample(samples, "journal_high_water_mark", category="alpha", partition="1") == 7
    assert sample(samples, "journal_segments", category="alpha", partition="1") == 1


def test_consumer_progress_lag_and_sink_counters() -> None:
    config = config_with_groups()
    runtime = FakeRuntime(
        [
            progress(b"alpha", 0, 0, NOW - 100),  # caught up: 0 s however old the last message
            progress(b"alpha", 1, 25, NOW - 4.5),  # behind: the age of the last delivered
            progress(b"beta", 0, 9),  # behind, nothing delivered yet: seconds unknown
            progress(b"gamma", 0, None),  # no reader yet: no lag sample at all
        ],
        {
            "messages consumed": 500,
            "bytes consumed": 50_000,
            "batches": 12,
            "sink retries": 2,
            "sink": {
                "messages": 480,
                "cassandra latency p50 us": 1500,
                "cassandra latency p99 us": 30_000,
                "cassandra latency max us": 2_000_000,
            },
        },
    )
    view = ProcessView(config, runs_server=False, members=[member(config, "archive", runtime)])
    _, samples, _ = scrape(view)
    group = {"group": "archive"}
    assert sample(samples, "consumer_lag_messages", **group, category="alpha", partition="0") == 0
    assert sample(samples, "consumer_lag_seconds", **group, category="alpha", partition="0") == 0
    assert sample(samples, "consumer_lag_messages", **group, category="alpha", partition="1") == 25
    assert sample(samples, "consumer_lag_seconds", **group, category="alpha", partition="1") == 4.5
    assert sample(samples, "consumer_lag_messages", **group, category="beta", partition="0") == 9
    assert (
        PREFIX + "consumer_lag_seconds",
        frozenset({**group, "category": "beta", "partition": "0"}.items()),
    ) not in samples
    assert not any(("category", "gamma") in labels for _, labels in samples)
    assert sample(samples, "consumer_messages_total", **group) == 500
    assert sample(samples, "consumer_bytes_total", **group) == 50_000
    assert sample(samples, "consumer_partitions_owned", **group) == 4
    assert sample(samples, "sink_rows_total", **group) == 480
    assert sample(samples, "sink_batches_total", **group) == 12
    assert sample(samples, "sink_retries_total", **group) == 2
    assert sample(samples, "sink_dead_letters_total", **group) == 0
    assert sample(samples, "sink_latency_seconds", **group, quantile="0.5") == 0.0015
    assert sample(samples, "sink_latency_seconds", **group, quantile="0.99") == 0.03
    assert sample(samples, "sink_latency_seconds", **group, quantile="1") == 2.0
    # A consume process has no log server: those families are there, without samples.
    assert not any(name == PREFIX + "connections" for name, _ in samples)


def test_service_gauges_follow_the_zookeeper_session_and_the_cassandra_session() -> None:
    config = config_with_groups()
    session = FakeSession(ConnectionState.SUSPENDED)
    archive = member(config, "archive", FakeRuntime(coordinator=session))
    rows = FakeRuntime([progress(b"alpha", 0, 0)])
    storage = SimpleNamespace(connected=False)
    view = ProcessView(
        config,
        runs_server=False,
        members=[archive, member(config, "rows", rows)],
        groups=config.consumers,
        storage=cast(Storage, storage),
    )
    _, samples, _ = scrape(view)
    assert sample(samples, "zookeeper_connected", group="archive") == 0
    # Not coordinated by ZooKeeper: no sample for the group.
    assert (PREFIX + "zookeeper_connected", frozenset({("group", "rows")})) not in samples
    assert sample(samples, "cassandra_connected") == 0
    session.connection_state = ConnectionState.CONNECTED
    storage.connected = True
    _, samples, _ = scrape(view)
    assert sample(samples, "zookeeper_connected", group="archive") == 1
    assert sample(samples, "cassandra_connected") == 1
    # A Cassandra group paused on sink failures: the connection is not usable.
    rows.progresses = [progress(b"alpha", 0, 5, paused=True)]
    _, samples, _ = scrape(view)
    assert sample(samples, "cassandra_connected") == 0


# -- bounded label cardinality ---------------------------------------------------------------------


def test_categories_beyond_the_limit_share_other_their_partitions_summed() -> None:
    counters = ScribeCounters()
    names = [b"c%02d" % i for i in range(6)]
    for i, name in enumerate(names):
        counters.incr(name, RECEIVED_GOOD, 10 + i)
    files = [
        partition_info(name, p, 100 * (i + 1) + p, 1000, 1)
        for i, name in enumerate(names)
        for p in (0, 1)
    ]
    config = config_with_groups()
    runtime = FakeRuntime([progress(name, 0, 3, NOW - 1) for name in names])
    view = ProcessView(
        config,
        runs_server=True,
        daemon=fake_daemon(counters),
        members=[member(config, "archive", runtime)],
    )
    _, samples, labels = scrape(view, partitions=files, limit=2)
    kept = [name.decode() for name in names[:2]]
    for i, name in enumerate(kept):
        assert sample(samples, "received_messages_total", category=name) == 10 + i
        assert (
            sample(samples, "journal_high_water_mark", category=name, partition="1")
            == 100 * (i + 1) + 1
        )
    folded = range(2, 6)
    assert sample(samples, "received_messages_total", category=OTHER) == sum(10 + i for i in folded)
    # One series for all their partitions: values summed, the partition label empty.
    assert sample(samples, "journal_high_water_mark", category=OTHER, partition="") == sum(
        100 * (i + 1) + p for i in folded for p in (0, 1)
    )
    assert sample(samples, "journal_bytes", category=OTHER, partition="") == 8 * 1000
    assert sample(samples, "journal_segments", category=OTHER, partition="") == 8
    assert (
        sample(samples, "consumer_lag_messages", group="archive", category=OTHER, partition="")
        == 12
    )
    assert (
        sample(samples, "consumer_lag_seconds", group="archive", category=OTHER, partition="") == 1
    )
    assert sample(samples, "category_labels_folded") == 4 == labels.folded
    values = {dict(labels_of).get("category") for _, labels_of in samples} - {None}
    assert values == {*kept, OTHER}


def test_label_values_stay_bounded_however_many_categories_arrive() -> None:
    counters = ScribeCounters()
    view = server_view(counters)
    labels = CategoryLabels(5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(view, None, labels, PartitionFiles()))
    for wave in range(4):
        for i in range(250):
            counters.incr(b"wave%d-%03d" % (wave, i), RECEIVED_GOOD)
        text = generate_latest(registry).decode()
        received = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == PREFIX + "received_messages_total"
        ]
        # Five names and "other", whatever arrives later; the first five keep their names.
        assert len(received) == 6
        assert sum(s.value for s in received) == 250 * (wave + 1)
        assert labels.folded == 250 * (wave + 1) - 5


def test_undecodable_category_bytes_become_escapes_in_the_label() -> None:
    labels = CategoryLabels(3)
    assert labels(b"ok") == "ok"
    assert labels(b"\xff\x00x") == "\\xff\x00x"
    assert labels(b"ok") == "ok"
    assert labels(b"third") == "third"
    assert labels(b"fourth") == OTHER
    assert labels(b"fourth") == OTHER
    assert labels.folded == 1
