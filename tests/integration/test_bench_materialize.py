"""``pipeline bench materialize`` against the real Cassandra, at tiny sizes: that it works,
never how fast."""

from __future__ import annotations

import json
import sys

import trio

from consumers.cassandra import CassandraSession


async def test_bench_materialize_reports_every_figure_and_drops_its_keyspace(
    cassandra_available: tuple[tuple[str, ...], int], cassandra: CassandraSession
) -> None:
    hosts, port = cassandra_available
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "bench",
        "materialize",
        f"--cassandra={hosts[0]}:{port}",
        "--rows=2000",
        "--duration=1",
        "--rate=2000",
        "--partitions=2",
        "--keyspace-prefix=t_bench",
        "--json",
    ]
    with trio.fail_after(300):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout)

    figures = {f"bare {name}": phase["rows_per_s"] for name, phase in report["bare"].items()}
    figures |= {f"sink {name}": phase["rows_per_s"] for name, phase in report["sink"].items()}
    figures["consumer"] = report["consumer"]["rows_per_s"]
    figures["consumer written"] = report["consumer"]["written_rows_per_s"]
    figures |= {
        f"e2e {k}": report["e2e"][k] for k in ("offered_per_s", "marks", "p50_ms", "p99_ms")
    }
    figures |= {f"ratio {k}": v for k, v in report["ratios"].items()}
    assert set(report["bare"]) == {"single", "batch_10", "batch_50", "batch_100"}
    assert set(report["sink"]) == {"events", "latest", "mapping"}
    assert all(value > 0 for value in figures.values()), figures
    assert report["e2e"]["missing"] == 0
    assert report["consumer"]["rows"] == 2000

    keyspaces = await cassandra.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
        (report["keyspace"],),
    )
    assert not keyspaces.rows, "the run's keyspace is dropped afterwards"
