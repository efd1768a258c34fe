"""``pipeline bench ...``: the ingest load generator and the machine's own limits."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import click
import trio

from pipeline import machine
from pipeline.bench import IngestResult, IngestSettings, decode_rate, run_ingest
from pipeline.cli_tools import parse_host_port


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: load any Scribe server, measure this machine."""


@bench_group.command("ingest")
@click.option("--target", default="127.0.0.1:1463", show_default=True, help="host[:port]")
@click.option("--connections", "-c", type=int, default=4, show_default=True)
@click.option("--batch", "-b", type=int, default=1000, show_default=True, help="Messages per Log.")
@click.option("--message-bytes", "-s", type=int, default=200, show_default=True)
@click.option("--duration", "-d", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Seconds not counted.")
@click.option("--rate", type=float, default=0.0, help="Messages/s in all (0: as fast as possible).")
@click.option("--categories", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ingest_command(
    target: str,
    connections: int,
    batch: int,
    message_bytes: int,
    duration: float,
    warmup: float,
    rate: float,
    categories: int,
    as_json: bool,
) -> None:
    """Send Log batches to a Scribe server; report msgs/s, MB/s and latency percentiles."""
    host, port = parse_host_port(target)
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
    )

    def progress(result: IngestResult) -> None:
        click.echo(
            f"  {result.seconds:5.1f}s {result.messages_per_s:12,.0f} msgs/s "
            f"{result.try_later} TRY_LATER",
            err=True,
        )

    result = trio.run(run_ingest, settings, progress)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{summary['msgs_per_s']:,} msgs/s  {summary['mb_per_s']} MB/s  "
        f"({summary['messages']:,} messages in {summary['seconds']} s, "
        f"{summary['try_later']} TRY_LATER)\n"
        f"Log latency ms: p50 {summary['p50_ms']}  p90 {summary['p90_ms']}  "
        f"p99 {summary['p99_ms']}  max {summary['max_ms']}"
    )


@bench_group.command("machine")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to probe the disk (default: a temporary dir under var/).",
)
@click.option("--seconds", type=float, default=2.0, show_default=True)
@click.option("--write-mb", type=int, default=512, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def machine_command(directory: Path | None, seconds: float, write_mb: int, as_json: bool) -> None:
    """Measure fdatasync rate, sequential write MB/s and the Thrift decode rate."""
    base = directory or Path("var")
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="machine-") as tmp:
        click.echo("measuring fdatasync, sequential writes, decode...", err=True)
        limits = machine.measure(Path(tmp), seconds=seconds, total_mb=write_mb)
    report = dataclasses.asdict(limits)
    report["decode_entries_per_s"] = decode_rate(seconds=seconds)
    report["decode_unframed_entries_per_s"] = decode_rate(seconds=seconds, framed=False)
    report = {k: round(v, 1) if isinstance(v, float) else v for k, v in report.items()}
    if as_json:
        click.echo(json.dumps(report))
    else:
        for key, value in report.items():
            click.echo(f"{key}: {value:,}")
    sys.stdout.flush()
