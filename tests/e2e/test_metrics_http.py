"""Prometheus /metrics, /healthz and /readyz on real daemons, as an operator scrapes them.

``pipeline serve`` takes messages for three categories while it is scraped: what it says it
received and journaled matches, message for message and byte for byte, what was sent and what
the journal holds.  ``/readyz`` turns 503 with the reason when the journal's disk is full (a
small tmpfs filled to the last byte, as in test_full_disk) and while the server drains after
SIGTERM.  Categories beyond ``[metrics] max_category_labels`` share the label ``other``, and
with ``[metrics] enabled = false`` only the health routes are served.  A ``pipeline run``
with an embedded files group shows its lag fall to 0, and every metric the Grafana dashboard
queries exists in its scrape.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from journal import list_partitions
from scribe_compat import LogEntry, ResultCode

from .conftest import ServerFactory, ServerProcess, write_config
from .test_full_disk import fill

pytestmark = pytest.mark.timeout(120)

HTTP_LISTENING = re.compile(rb'msg="http listening" .*?port=(\d+)')
DASHBOARD = Path(__file__).parents[2] / "conf" / "grafana" / "scribe-pipeline.json"
CATEGORIES = [b"alpha", b"beta", b"gamma"]
CONFIG = """
[http]
port = 0
[admission]
min_free_disk_bytes = 0
disk_check_interval_s = 0.1
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_port(server: ServerProcess) -> int:
    match = HTTP_LISTENING.search(server.new_log())
    assert match is not None, server.log()
    return int(match.group(1))


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: int) -> tuple[set[str], Samples]:
    """The families (as their TYPE lines name them) and every sample of one scrape."""
    status, body = get(port, "/metrics")
    assert status == 200
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        families.add(family.name)
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(predicate: Callable[[], bool], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (mounting needs root, as test_full_disk's)."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_scraped_counts_match_what_was_sent_and_journaled(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    server = pipeline_server(config=write_config(tmp_path / "p.toml", CONFIG)).start()
    port = http_port(server)
    sent = dict.fromkeys(CATEGORIES, 0)
    sent_bytes = dict.fromkeys(CATEGORIES, 0)
    scrapes: list[Samples] = []
    stop = threading.Event()

    def scrape_meanwhile() -> None:
        while not stop.is_set():
            scrapes.append(scrape(port)[1])

    scraper = threading.Thread(target=scrape_meanwhile)
    scraper.start()
    try:
        with server.client() as client:
            for call in range(60):
                # One category per call, and mixed calls: both ways of counting bytes.
                if call % 3 == 2:
                    entries = [LogEntry(c, b"m" * (call + i)) for i, c in enumerate(CATEGORIES)]
                else:
                    category = CATEGORIES[call % 2]
                    entries = [LogEntry(category, b"x" * (i + 1)) for i in range(call + 1)]
                assert client.log(entries) == ResultCode.OK
                for entry in entries:
                    sent[entry.category] += 1
                    sent_bytes[entry.category] += len(entry.message)
    finally:
        stop.set()
        scraper.join()
    assert scrapes, "no scrape finished during the load"
    _, samples = scrape(port)
    journal = {info.category: info for info in list_partitions(server.journal_dir)}
    for category in CATEGORIES:
        label = category.decode()
        assert (
            value(samples, "scribe_pipeline_received_messages_total", category=label)
            == sent[category]
        )
        assert (
            value(samples, "scribe_pipeline_received_bytes_total", category=label)
            == (sent_bytes[category])
        )
        info = journal[category]
        assert info.high_water_mark == sent[category]
        assert (
            value(samples, "scribe_pipeline_journal_high_water_mark", category=label, partition="0")
            == sent[category]
        )
        assert (
            value(samples, "scribe_pipeline_journal_bytes", category=label, partition="0")
            == info.size_bytes
        )
    calls = value(samples, "scribe_pipeline_log_latency_seconds_count")
    assert calls == 60
    assert value(samples, "scribe_pipeline_journal_fsync_seconds_count") >= 1
    assert value(samples, "scribe_pipeline_ready") == 1, get(port, "/readyz")
    # Counters never go backwards from one scrape to the next.
    received = [
        value(s, "scribe_pipeline_received_messages_total", category="alpha") for s in scrapes
    ]
    assert received == sorted(received)
    assert get(port, "/healthz") == (200, b'{"status": "alive"}\n')


def test_readyz_is_503_while_the_journal_disk_is_full(
    pipeline_server: ServerFactory, tmp_path: Path, small_filesystem: Path
) -> None:
    journal_dir = small_filesystem / "journal"
    config = write_config(tmp_path / "p.toml", CONFIG)
    server = pipeline_server(journal_dir=journal_dir, config=config).start()
    port = http_port(server)
    assert get(port, "/readyz")[0] == 200
    filler = fill(small_filesystem)
    with server.client() as client:
        assert client.log([LogEntry(b"alpha", b"x" * 4096)]) == ResultCode.TRY_LATER
    status, body = get(port, "/readyz")
    assert status == 503
    document = json.loads(body)
    assert document["status"] == "not ready"
    assert document["problems"]["journal"].startswith("the journal's disk is full")
    _, samples = scrape(port)
    assert value(samples, "scribe_pipeline_ready") == 0
    assert (
        value(samples, "scribe_pipeline_refused_messages_total", category="alpha", reason="disk")
        == 1
    )
    filler.unlink()
    wait_until(lambda: get(port, "/readyz")[0] == 200)


def test_readyz_is_503_while_the_server_drains(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "p.toml", CONFIG + "[server]\ndrain_timeout_s = 5.0\n")
    server = pipeline_server(config=config).start()
    port = http_port(server)
    assert get(port, "/readyz")[0] == 200
    # A call half sent keeps the drain waiting (up to drain_timeout_s) for it to finish.
    import socket

    with socket.create_connection(server.address) as half:
        half.sendall(b"\x00\x00\x01\x00\x80\x01")
        time.sleep(0.2)
        assert server.proc is not None
        server.proc.terminate()
        wait_until(lambda: get(port, "/readyz")[0] == 503, 4.0)
        status, body = get(port, "/readyz")
        assert status == 503
        assert json.loads(body)["problems"]["stopping"] == "stopping"
        assert get(port, "/healthz")[0] == 200  # alive while it drains
    assert server.wait(15) == 0


def test_categories_beyond_the_label_limit_are_folded_into_other(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "p.toml", CONFIG + "[metrics]\nmax_category_labels = 3\n")
    server = pipeline_server(config=config).start()
    port = http_port(server)
    categories = [b"cat%d" % i for i in range(8)]
    with server.client() as client:
        for i, category in enumerate(categories):
            entries = [LogEntry(category, b"y" * (i + 1)) for _ in range(i + 1)]
            assert client.log(entries) == ResultCode.OK
    status, body = get(port, "/metrics")
    assert status == 200
    assert b"_created" not in body
    _, samples = scrape(port)
    journal = {info.category: info for info in list_partitions(server.journal_dir)}
    # The first three seen keep their names; the five others share one series per metric.
    for i, category in enumerate(categories[:3]):
        label = category.decode()
        assert value(samples, "scribe_pipeline_received_messages_total", category=label) == i + 1
        assert (
            value(samples, "scribe_pipeline_received_bytes_total", category=label) == (i + 1) ** 2
        )
    folded = range(3, 8)
    assert value(samples, "scribe_pipeline_received_messages_total", category="other") == sum(
        i + 1 for i in folded
    )
    assert value(samples, "scribe_pipeline_received_bytes_total", category="other") == sum(
        (i + 1) ** 2 for i in folded
    )
    assert value(
        samples, "scribe_pipeline_journal_high_water_mark", category="other", partition=""
    ) == sum(journal[categories[i]].high_water_mark or 0 for i in folded)
    assert value(samples, "scribe_pipeline_journal_bytes", category="other", partition="") == sum(
        journal[categories[i]].size_bytes for i in folded
    )
    assert value(samples, "scribe_pipeline_category_labels_folded") == 5
    labels = {dict(labels).get("category") for _, labels in samples} - {None, ""}
    assert labels == {"cat0", "cat1", "cat2", "other"}


def test_with_metrics_disabled_health_is_served_and_metrics_are_not(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "p.toml", CONFIG + "[metrics]\nenabled = false\n")
    server = pipeline_server(config=config).start()
    port = http_port(server)
    with server.client() as client:
        assert client.log([LogEntry(b"alpha", b"x")]) == ResultCode.OK
    status, body = get(port, "/metrics")
    assert status == 404
    assert json.loads(body) == {"error": "no such path '/metrics' (known: /healthz, /readyz)"}
    assert get(port, "/healthz") == (200, b'{"status": "alive"}\n')
    assert get(port, "/readyz") == (200, b'{"status": "ready"}\n')


class RunProcess(ServerProcess):
    """``pipeline run`` (the server and its embedded groups)."""

    def arguments(self) -> list[str | Path]:
        return ["run", *super().arguments()[1:]]


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries mention."""
    document = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in document["panels"] for t in panel["targets"]]
    expressions += [v["query"] for v in document["templating"]["list"] if v["type"] == "query"]
    return {name for e in expressions for name in re.findall(r"scribe_pipeline_\w+", e)}


def family_of(name: str) -> str:
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_run_exposes_consumer_lag_until_caught_up_and_every_dashboard_metric(
    tmp_path: Path,
) -> None:
    files = tmp_path / "files"
    config = write_config(
        tmp_path / "run.toml",
        CONFIG
        + f"""
[coordination]
state_dir = "{tmp_path / "state"}"
[[consumers]]
name = "archive"
categories = ["*"]
sink = "files"
embedded = true
batch_wait_s = 0.01
commit_interval_s = 0.1
[consumers.files]
file_path = "{files}"
""",
    )
    server = RunProcess(tmp_path / "journal", tmp_path / "run.log", config, ())
    try:
        server.start(timeout=30)
        port = http_port(server)
        with server.client() as client:
            for category in CATEGORIES:
                entries = [LogEntry(category, b"event %d" % i) for i in range(100)]
                assert client.log(entries) == ResultCode.OK

        def caught_up() -> bool:
            _, samples = scrape(port)
            return value(samples, "scribe_pipeline_consumer_messages_total", group="archive") == 300

        wait_until(caught_up)
        families, samples = scrape(port)
        for category in CATEGORIES:
            labels = {"group": "archive", "category": category.decode(), "partition": "0"}
            assert value(samples, "scribe_pipeline_consumer_lag_messages", **labels) == 0
            assert value(samples, "scribe_pipeline_consumer_lag_seconds", **labels) == 0
            assert ("scribe_pipeline_consumer_lag_messages", frozenset(labels.items())) in samples
        assert value(samples, "scribe_pipeline_sink_rows_total", group="archive") == 300
        assert value(samples, "scribe_pipeline_sink_batches_total", group="archive") >= 1
        queried = dashboard_metrics()
        assert len(queried) > 20
        missing = sorted(m for m in queried if family_of(m) not in families)
        assert missing == [], f"the dashboard queries metrics the pipeline does not have: {missing}"
        assert value(samples, "scribe_pipeline_ready") == 1
    finally:
        server.kill()
