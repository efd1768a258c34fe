"""Aggregate ingest: two log servers on this machine at once, against one alone, same session.

Each server is a fresh `pipeline serve` (default durability, fsync) with a journal of its own,
loaded by its own `pipeline bench ingest`; with two, both load generators start together. Runs
alternate which shape goes first, so a change in the machine's other load weighs on both. Each
server's and the load generators' CPU time is measured too: on one machine the sum is bounded by
its cores, not by the design, whose scaling is across machines.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .procs import PIPELINE, Children, cpu_seconds, free_port, load_average, progress
from .stats import spread

# A load generator runs warm-up plus duration and needs a few seconds to start and report;
# past this much more it is killed, so a hung run never holds the machine.
GENERATOR_SLACK_S = 60.0


@dataclass(frozen=True)
class IngestOptions:
    runs: int
    connections: int
    batch: int
    message_bytes: int
    duration_s: float
    warmup_s: float


def _generator(options: IngestOptions, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [
                *PIPELINE,
                "bench",
                "ingest",
                "--target",
                f"127.0.0.1:{port}",
                "--connections",
                str(options.connections),
                "--batch",
                str(options.batch),
                "--message-bytes",
                str(options.message_bytes),
                "--duration",
                str(options.duration_s),
                "--warmup",
                str(options.warmup_s),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class ShapeResult:
    run: int
    servers: int
    per_server_msgs_per_s: list[int]
    mb_per_s: float
    p99_ms: list[float]
    try_later: int
    # Cores busy while load was sent (warm-up included): the servers' and the load generators'
    # together cannot pass the machine's core count.
    server_cores: float
    generator_cores: float
    loadavg_before: str
    loadavg_after: str

    @property
    def msgs_per_s(self) -> int:
        return sum(self.per_server_msgs_per_s)

    @property
    def server_cpu_us_per_msg(self) -> float:
        """The servers' CPU per message acknowledged: what the machine's other load does not
        move, unlike the throughput."""
        return round(self.server_cores * 1e6 / self.msgs_per_s, 2) if self.msgs_per_s else 0.0


def run_shape(work: Path, options: IngestOptions, run: int, servers: int) -> ShapeResult:
    """One run of ``servers`` log servers, each under its own load generator."""
    children = Children(work)
    names = [f"run{run}-of{servers}-serve{i}" for i in range(servers)]
    journals = [work / f"{name}-journal" for name in names]
    try:
        ports = []
        for name, journal in zip(names, journals, strict=True):
            port = free_port()
            children.start(
                name, "serve", "--port", str(port), "--journal-dir", journal,
                "--log-format", "json", "--log-level", "warning",
            )  # fmt: skip
            children.wait_listening(name, port)
            ports.append(port)
        pids = [children.procs[name].pid for name in names]
        load_before = load_average()
        server_cpu_before = [cpu_seconds(pid) for pid in pids]
        generators_cpu_before = _children_cpu_s()
        began = time.monotonic()
        generators = [
            _generator(options, port, work / f"{name}-bench.log")
            for name, port in zip(names, ports, strict=True)
        ]
        limit = options.warmup_s + options.duration_s + GENERATOR_SLACK_S
        outputs = []
        for generator in generators:
            try:
                out, _ = generator.communicate(timeout=max(1.0, began + limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                for g in generators:
                    g.kill()
                    g.wait()
                raise SystemExit(f"a load generator did not finish in {limit:g} s") from None
            if generator.returncode != 0:
                raise SystemExit(f"bench ingest exited {generator.returncode}; see {work}")
            outputs.append(json.loads(out))
        # The servers work only while load arrives, so over the generators' warm-up plus
        # duration; the generators' own figure includes their start-up (imports, a fraction of
        # a second of CPU each).
        busy = options.warmup_s + options.duration_s
        server_cpu = [
            cpu_seconds(pid) - before for pid, before in zip(pids, server_cpu_before, strict=True)
        ]
        generators_cpu = _children_cpu_s() - generators_cpu_before
        load_after = load_average()
    finally:
        children.close()
        for journal in journals:
            shutil.rmtree(journal, ignore_errors=True)
    return ShapeResult(
        run=run,
        servers=servers,
        per_server_msgs_per_s=[int(o["msgs_per_s"]) for o in outputs],
        mb_per_s=round(sum(float(o["mb_per_s"]) for o in outputs), 1),
        p99_ms=[float(o["p99_ms"]) for o in outputs],
        try_later=sum(int(o["try_later"]) for o in outputs),
        server_cores=round(sum(server_cpu) / busy, 2),
        generator_cores=round(generators_cpu / busy, 2),
        loadavg_before=load_before,
        loadavg_after=load_after,
    )


def run_ingest(work: Path, options: IngestOptions) -> dict[str, object]:
    """Every run, one JSON line each on standard output; returns the summary."""
    results: list[ShapeResult] = []
    for run in range(options.runs):
        order = (1, 2) if run % 2 == 0 else (2, 1)
        for servers in order:
            progress(f"ingest run {run + 1}/{options.runs}: {servers} server(s)")
            result = run_shape(work, options, run, servers)
            derived = {
                "msgs_per_s": result.msgs_per_s,
                "server_cpu_us_per_msg": result.server_cpu_us_per_msg,
            }
            print(json.dumps(dataclasses.asdict(result) | derived), flush=True)
            results.append(result)
    one = [r for r in results if r.servers == 1]
    two = [r for r in results if r.servers == 2]
    # Paired by run: a run's two shapes ran back to back, under about the same other load.
    ratios = [b.msgs_per_s / a.msgs_per_s for a, b in zip(one, two, strict=True) if a.msgs_per_s]
    return {
        "one_server_msgs_per_s": spread([r.msgs_per_s for r in one], 0),
        "two_servers_sum_msgs_per_s": spread([r.msgs_per_s for r in two], 0),
        "two_servers_each_msgs_per_s": spread([x for r in two for x in r.per_server_msgs_per_s], 0),
        "paired_ratio_two_over_one": spread(ratios),
        "server_cores_one": spread([r.server_cores for r in one]),
        "server_cores_two": spread([r.server_cores for r in two]),
        "generator_cores_one": spread([r.generator_cores for r in one]),
        "generator_cores_two": spread([r.generator_cores for r in two]),
        "server_cpu_us_per_msg_one": spread([r.server_cpu_us_per_msg for r in one]),
        "server_cpu_us_per_msg_two": spread([r.server_cpu_us_per_msg for r in two]),
        "try_later": sum(r.try_later for r in results),
    }
