"""``pipeline bench ...``: the ingest load generator, the machine's own limits, and
materialization into Cassandra."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from pipeline import machine
from pipeline.bench import IngestResult, IngestSettings, decode_rate, run_ingest
from pipeline.bench_fairness import FairnessResult, FairnessSettings, LargeKind, run_fairness
from pipeline.bench_fetch import FetchBenchSettings, run_fetch_bench
from pipeline.bench_materialize import (
    BARE_BATCHES,
    BenchError,
    MaterializeSettings,
    run_materialize,
)
from pipeline.cli.common import (
    CASSANDRA_ADDRESS,
    duration_option,
    json_option,
    run_async,
    target_option,
)
from scribe_compat import ClientError, CodecLimits


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: load any Scribe server, measure this machine, materialize into Cassandra."""


@bench_group.command("ingest")
@target_option()
@click.option("--connections", type=click.IntRange(1, 4096), default=4, show_default=True)
@click.option(
    "--batch",
    "-b",
    type=click.IntRange(1, CodecLimits.max_entries_per_call),
    default=1000,
    show_default=True,
    help="Messages per Log.",
)
@click.option(
    "--message-bytes", "-s", type=click.IntRange(0, 16 << 20), default=200, show_default=True
)
@duration_option(low=0, high=86400)
@click.option(
    "--warmup",
    type=click.FloatRange(0, 3600),
    default=1.0,
    show_default=True,
    help="Seconds not counted.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Messages/s in all (0: as fast as possible).",
)
@click.option(
    "--category",
    "-c",
    default=IngestSettings.category,
    show_default=True,
    help="The category written (with --categories N: NAME0 to NAME<N-1>).",
)
@click.option("--categories", type=click.IntRange(1, 10_000), default=1, show_default=True)
@json_option("Print one JSON object.")
def ingest_command(
    target: tuple[str, int],
    connections: int,
    batch: int,
    message_bytes: int,
    duration: float,
    warmup: float,
    rate: float,
    category: str,
    categories: int,
    as_json: bool,
) -> None:
    """Send Log batches to a Scribe server; report msgs/s, MB/s and latency percentiles.

    The messages stay on the server, in the category --category names ("categories" in the
    JSON; how to remove them is said on standard error).
    """
    host, port = target
    settings = IngestSettings(
        host=host,
        port=port,
        connections=connections,
        batch=batch,
        message_bytes=message_bytes,
        duration_s=duration,
        warmup_s=warmup,
        rate=rate,
        categories=categories,
        category=category,
    )

    def progress(result: IngestResult) -> None:
        click.echo(
            f"  {result.seconds:5.1f}s {result.messages_per_s:12,.0f} msgs/s "
            f"{result.try_later} TRY_LATER",
            err=True,
        )

    result = run_async(run_ingest, settings, progress, errors=(ClientError,))
    names = settings.category_names()
    written = repr(names[0]) if len(names) == 1 else f"{names[0]!r} to {names[-1]!r}"
    click.echo(
        f"wrote to {host}:{port}, category {written} (--category); on a pipeline server a "
        "route for it with a short retention_age_s removes the messages, or, with the server "
        "stopped, deleting its directory in the journal directory",
        err=True,
    )
    summary = result.summary()
    if as_json:
        click.echo(json.dumps({**summary, "categories": names}))
        return
    click.echo(
        f"{summary['msgs_per_s']:,} msgs/s  {summary['mb_per_s']} MB/s  "
        f"({summary['messages']:,} messages in {summary['seconds']} s, "
        f"{summary['try_later']} TRY_LATER)\n"
        f"Log latency ms: p50 {summary['p50_ms']}  p90 {summary['p90_ms']}  "
        f"p99 {summary['p99_ms']}  max {summary['max_ms']}"
    )


@bench_group.command("fairness")
@target_option()
@click.option(
    "--large-connections",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Connections sending large calls back to back.",
)
@click.option(
    "--kind",
    type=click.Choice([k.value for k in LargeKind]),
    default=LargeKind.METADATA.value,
    show_default=True,
    help="Entries with category and message only, with a metadata map, or with unknown fields.",
)
@click.option(
    "--entries",
    type=click.IntRange(1, 10_000_000),
    default=100_000,
    show_default=True,
    help="Entries per large call.",
)
@click.option(
    "--call-bytes",
    type=click.IntRange(1024, 1 << 31),
    default=FairnessSettings.large_bytes,
    show_default=True,
    help="Frame payload of each large call (messages are sized to fill it).",
)
@click.option(
    "--probe-interval",
    type=click.FloatRange(0.001, 10),
    default=0.01,
    show_default=True,
    help="Seconds between one-message probe calls.",
)
@duration_option()
@click.option("--warmup", type=click.FloatRange(0, 600), default=1.0, show_default=True)
@json_option("Print one JSON object.")
def fairness_command(
    target: tuple[str, int],
    large_connections: int,
    kind: str,
    entries: int,
    call_bytes: int,
    probe_interval: float,
    duration: float,
    warmup: float,
    as_json: bool,
) -> None:
    """How long a one-message Log waits while large Log calls flow on other connections."""
    host, port = target
    settings = FairnessSettings(
        host=host,
        port=port,
        large_connections=large_connections,
        kind=LargeKind(kind),
        large_entries=entries,
        large_bytes=call_bytes,
        probe_interval_s=probe_interval,
        duration_s=duration,
        warmup_s=warmup,
    )

    def progress(result: FairnessResult) -> None:
        worst = max(result.probe_latencies_ms, default=0.0)
        click.echo(
            f"  {result.seconds:5.1f}s {len(result.large_latencies_ms)} large calls, "
            f"probe max {worst:.1f} ms",
            err=True,
        )

    try:
        result = run_async(run_fairness, settings, progress, errors=(ClientError,))
    except ValueError as exc:  # entries that do not fit --call-bytes
        raise click.ClickException(str(exc)) from exc
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"one-message Log while {large_connections} connections send {kind} calls of "
        f"{entries:,} entries ({call_bytes:,} bytes):\n"
        f"  probe latency ms: p50 {summary['probe_p50_ms']}  p99 {summary['probe_p99_ms']}  "
        f"max {summary['probe_max_ms']}  ({summary['probe_calls']} calls, "
        f"{summary['probe_try_later']} TRY_LATER)\n"
        f"  large calls: {summary['large_calls']} ({summary['large_try_later']} TRY_LATER), "
        f"p50 {summary['large_p50_ms']} ms, {summary['large_msgs_per_s']:,} msgs/s, "
        f"{summary['large_mb_per_s']} MB/s"
    )


@bench_group.command("machine")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False, exists=True, writable=True),
    help="An existing directory on the disk to probe (default: a temporary dir under var/).",
)
@duration_option("Seconds per measurement.", "--seconds", default=2.0, low=0.1)
@click.option(
    "--write-mb",
    type=click.IntRange(1, 1 << 20),
    default=512,
    show_default=True,
    help="MB written for the sequential write rate.",
)
@json_option("Print one JSON object.")
def machine_command(directory: Path | None, duration: float, write_mb: int, as_json: bool) -> None:
    """Measure fdatasync rate, sequential write MB/s and the Thrift decode rate."""
    base = directory or Path("var")
    if directory is None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="machine-") as tmp:
        click.echo("measuring fdatasync, sequential writes, decode...", err=True)
        limits = machine.measure(Path(tmp), seconds=duration, total_mb=write_mb)
    report = dataclasses.asdict(limits)
    report["decode_entries_per_s"] = decode_rate(seconds=duration)
    report["decode_unframed_entries_per_s"] = decode_rate(seconds=duration, framed=False)
    report = {k: round(v, 1) if isinstance(v, float) else v for k, v in report.items()}
    if as_json:
        click.echo(json.dumps(report))
    else:
        for key, value in report.items():
            click.echo(f"{key}: {value:,}")
    sys.stdout.flush()


def _keyspace_prefix(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # The keyspace is PREFIX_<8 hex digits>; Cassandra names are at most 48 characters.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,38}", value):
        raise click.BadParameter("expected a letter, then up to 38 letters, digits or _")
    return value


@bench_group.command("materialize")
@click.option(
    "--cassandra",
    "target",
    type=CASSANDRA_ADDRESS,
    default="127.0.0.1",
    show_default=True,
    help="A Cassandra contact point, host[:port] (port 9042 unless given).",
)
@click.option(
    "--rows",
    type=click.IntRange(1000, 10_000_000),
    default=300_000,
    show_default=True,
    help="Rows per throughput phase at most; the consumer drains a journal of this many.",
)
@duration_option("Seconds per throughput phase at most, and of the end-to-end load.")
@click.option(
    "--message-bytes",
    "-s",
    type=click.IntRange(16, 400),
    default=200,
    show_default=True,
    help="Message size (at most 400: a bare batch of 100 rows stays under Cassandra's 50 KiB).",
)
@click.option(
    "--in-flight",
    type=click.IntRange(1, 4096),
    default=256,
    show_default=True,
    help="Requests in flight: the bare single-row loop's and the sink session's.",
)
@click.option(
    "--batch-in-flight",
    type=click.IntRange(1, 256),
    default=64,
    show_default=True,
    help="Batches of 100 in flight in the bare loops (smaller batches: as many rows).",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Journal partitions written at once (one category and partition key each).",
)
@click.option(
    "--rate",
    type=click.FloatRange(100, 1_000_000),
    default=20_000.0,
    show_default=True,
    help="End to end: events per second offered.",
)
@click.option(
    "--keyspace-prefix",
    default="bench_materialize",
    show_default=True,
    callback=_keyspace_prefix,
    help="The run's keyspace is PREFIX_<random>, dropped at the end.",
)
@json_option("Print one JSON object.")
def materialize_command(
    target: tuple[str, int],
    rows: int,
    duration: float,
    message_bytes: int,
    in_flight: int,
    batch_in_flight: int,
    partitions: int,
    rate: float,
    keyspace_prefix: str,
    as_json: bool,
) -> None:
    """Events into Cassandra: the bare driver's ceiling, the sink, the whole consumer, and
    end-to-end latency, in one run in a keyspace of its own."""
    host, port = target
    settings = MaterializeSettings(
        hosts=(host,),
        port=port,
        rows=rows,
        duration_s=duration,
        message_bytes=message_bytes,
        in_flight=in_flight,
        batch_in_flight=batch_in_flight,
        partitions=partitions,
        rate=rate,
        keyspace_prefix=keyspace_prefix,
    )
    report = run_async(
        run_materialize, settings, lambda line: click.echo(line, err=True), errors=(BenchError,)
    )
    summary = report.summary()
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo("\n".join(materialize_lines(summary)))


def materialize_lines(summary: dict[str, Any]) -> list[str]:
    """The text report of `pipeline bench materialize`."""
    bare, sink, ratios, met = (
        summary["bare"],
        summary["sink"],
        summary["ratios"],
        summary["targets_met"],
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    depth = summary["batch_in_flight"]
    lines = [
        f"bare driver, events table, {summary['message_bytes']}-byte messages:",
        f"  {'single rows':<19} {summary['in_flight']:>4} in flight"
        f"  {bare['single']['rows_per_s']:>9,} rows/s",
    ]
    for size in BARE_BATCHES:
        lines.append(
            f"  batches of {size:>3} rows {depth[f'batch_{size}']:>4} in flight"
            f"  {bare[f'batch_{size}']['rows_per_s']:>9,} rows/s"
        )
    lines.append(f"sink, journal batches of 1000 on {summary['partitions']} partitions at once:")
    for name, ratio, against in (
        ("events", ratios["events_vs_bare_batch"], "the best bare batch"),
        ("latest", ratios["latest_vs_bare_single"], "bare single rows"),
        ("mapping", ratios["mapping_vs_bare_single"], "bare single rows"),
    ):
        lines.append(
            f"  {name:<34}  {sink[name]['rows_per_s']:>9,} rows/s  {ratio:4.0%} of {against}"
            f" (target 80%: {verdict(met[name])})"
        )
    consumer, e2e = summary["consumer"], summary["e2e"]
    lines.append(
        f"whole consumer: {consumer['rows_per_s']:,} rows/s from start to all committed"
        f" ({consumer['rows']:,} rows in {consumer['seconds_to_committed']} s;"
        f" all written after {consumer['seconds_to_written']} s)"
    )
    lines.append(
        f"end to end at {e2e['offered_per_s']:,} events/s: Log OK to row readable"
        f" p50 {e2e['p50_ms']} ms, p99 {e2e['p99_ms']} ms, max {e2e['max_ms']} ms"
        f" ({e2e['marks']} marks, {e2e['missing']} missing;"
        f" target p99 < 1 s: {verdict(met['e2e_p99_under_1s'])})"
    )
    return lines


@bench_group.command("fetch")
@click.option(
    "--messages", type=click.IntRange(1000, 10_000_000), default=200_000, show_default=True
)
@click.option(
    "--message-bytes", "-s", type=click.IntRange(1, 1 << 20), default=200, show_default=True
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=FetchBenchSettings.rounds,
    show_default=True,
    help="Reads each way, taking turns; the best of each is reported, and the medians.",
)
@json_option("Print one JSON object.")
def fetch_command(messages: int, message_bytes: int, rounds: int, as_json: bool) -> None:
    """Read one partition through the fetch service and from its files, in one run."""
    base = Path("var")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-fetch-") as tmp:
        click.echo(f"writing {messages:,} messages, reading them locally and remotely...", err=True)
        settings = FetchBenchSettings(messages=messages, message_bytes=message_bytes, rounds=rounds)
        report = run_fetch_bench(Path(tmp) / "journal", settings).as_dict()
    if as_json:
        click.echo(json.dumps(report))
    else:
        for key, value in report.items():
            click.echo(f"{key}: {value:,}")
