#!/usr/bin/env python3
"""Issue 10's cluster benchmarks: ingest of two log servers at once, consumer failover on ZooKeeper.

Usage::

    .venv/bin/python scripts/bench_cluster.py ingest [--runs 3] [--connections 4] [-b 1000]
        [-s 200] [-d 10]
    .venv/bin/python scripts/bench_cluster.py failover [--settings 10:1,2:0.2]
        [--signals kill,term] [--rounds 5] [--members 3] [--partitions 6] [--rate 2000]
        [--hosts 127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283]

``ingest`` runs one `pipeline serve` alone and two at once (each with its own journal and its
own `pipeline bench ingest`), alternated, ``--runs`` times each.  ``failover`` needs a ZooKeeper
ensemble (``pipeline services start --config conf/services/cluster.toml --only zookeeper``):
for each ``session_timeout_s:settle_s`` setting it runs a `pipeline serve`, ``--members``
`pipeline consume` members of one group (files sink) and a steady sender, then SIGKILLs or
SIGTERMs one member per round and times until every partition it owned is owned by another
member (ZooKeeper) and written again (the sink's files).  Progress goes to standard error, one
JSON line per run or round and a summary to standard output.  Every process started is stopped
at the end, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
from pathlib import Path

import trio
from cluster_bench.failover import FailoverOptions, Setting, run_failover
from cluster_bench.ingest import IngestOptions, run_ingest
from cluster_bench.procs import load_average, progress

ENSEMBLE = "127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}


def _settings(text: str) -> list[Setting]:
    try:
        pairs = [item.split(":") for item in text.split(",")]
        settings = [Setting(float(session), float(settle)) for session, settle in pairs]
        if any(s.session_timeout_s <= 0 or s.settle_s < 0 for s in settings):
            raise ValueError(text)
        return settings
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected session_timeout_s:settle_s[,...], got {text!r}"
        ) from exc


def _signals(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown signal(s) {unknown}; use kill and/or term")
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected more than 0, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    top.add_argument(
        "--work-dir",
        type=Path,
        help="a new directory is made in this one for journals, outputs and logs "
        "(default: the system's temporary directory)",
    )
    top.add_argument(
        "--keep", action="store_true", help="keep that directory (kept anyway when a run fails)"
    )
    commands = top.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="one log server against two at once",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ingest.add_argument("--runs", type=_positive_int, default=3, help="runs of each shape")
    ingest.add_argument("--connections", type=_positive_int, default=4, help="per server")
    ingest.add_argument("-b", "--batch", type=_positive_int, default=1000)
    ingest.add_argument("-s", "--message-bytes", type=_positive_int, default=200)
    ingest.add_argument("-d", "--duration", type=_positive_float, default=10.0)
    ingest.add_argument("--warmup", type=_positive_float, default=1.0)

    failover = commands.add_parser(
        "failover",
        help="time until a dead member's partitions are consumed again",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    failover.add_argument("--hosts", default=ENSEMBLE, help="ZooKeeper connection string")
    failover.add_argument(
        "--settings",
        type=_settings,
        default="10:1,2:0.2",
        help="session_timeout_s:settle_s pairs (10:1 are the configuration's defaults)",
    )
    failover.add_argument(
        "--signals",
        type=_signals,
        default="kill,term",
        help="kill: SIGKILL (the session expires); term: SIGTERM (a graceful stop)",
    )
    failover.add_argument("--rounds", type=_positive_int, default=5, help="per setting, signal")
    failover.add_argument(
        "--members", type=_positive_int, default=3, help="pipeline consume processes"
    )
    failover.add_argument(
        "--partitions", type=_positive_int, default=6, help="categories of one partition each"
    )
    failover.add_argument("--rate", type=_positive_float, default=2000.0, help="messages/s")
    failover.add_argument(
        "--poll", type=_positive_float, default=0.025, help="seconds between observations"
    )
    return top


def main() -> None:
    args = parser().parse_args()
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    # Always a directory of our own, so removing it never removes anything of the user's.
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=args.work_dir))
    progress(f"work directory {work}; load average {load_average()}")
    failed = True
    summary: object
    try:
        if args.command == "ingest":
            options = IngestOptions(
                runs=args.runs,
                connections=args.connections,
                batch=args.batch,
                message_bytes=args.message_bytes,
                duration_s=args.duration,
                warmup_s=args.warmup,
            )
            summary = run_ingest(work, options)
        else:
            failover = FailoverOptions(
                hosts=args.hosts,
                settings=args.settings,
                signals=[SIGNALS[name] for name in args.signals],
                rounds=args.rounds,
                members=args.members,
                partitions=args.partitions,
                rate=args.rate,
                poll_s=args.poll,
            )
            summary = trio.run(run_failover, work, failover)
        print(json.dumps({"summary": summary, "loadavg_end": load_average()}), flush=True)
        failed = False
    finally:
        progress(f"load average {load_average()}")
        if failed or args.keep:
            progress(f"kept {work} (logs of every process)")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
