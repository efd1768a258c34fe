"""``pipeline.bench_fetch``: both reads cover the same partition whole, round after round.

The rates themselves are the benchmark's business (never asserted in a test); what is checked
is that the comparison is of like with like: every round reads every message and byte, from
offset 0, locally and through a ``pipeline serve`` child's fetch service.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.bench_fetch import FetchBenchSettings, run_fetch_bench


def test_each_round_reads_the_whole_partition_both_ways(tmp_path: Path) -> None:
    settings = FetchBenchSettings(messages=3000, message_bytes=50, batch=700, rounds=2)
    result = run_fetch_bench(tmp_path / "journal", settings)
    assert len(result.local_rounds) == len(result.remote_rounds) == 2
    for rate in (*result.local_rounds, *result.remote_rounds):
        assert (rate.messages, rate.nbytes) == (3000, 3000 * 50)
    assert result.local in result.local_rounds and result.remote in result.remote_rounds
    report = result.as_dict()
    assert report["messages"] == 3000 and report["rounds"] == 2
    assert report["remote_over_local"] == round(result.ratio, 3)
