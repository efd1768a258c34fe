"""``kill -9`` of a real ``pipeline serve`` under load, round after round, on one journal.

Invariant: after every restart, each message that was answered OK is in the journal exactly once,
in the partition's order of acknowledgement; messages that got no answer (or TRY_LATER) may or may
not be there, but never twice and never out of their client's order; offsets are dense and
``journal.verify`` finds nothing fatal.

Each client thread numbers its messages ``<client>:<seq>:...`` with one counter that runs across
rounds and never resends, so within any partition one client's sequence numbers must strictly
increase.  ``CRASH_ROUNDS`` sets the number of rounds (20 by default, 200 in ``make crash-test``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from journal import PartitionId, list_partitions, open_reader
from scribe_compat import ClientError, LogEntry, ResultCode, ScribeClient

from .conftest import ServerFactory, verify_journal, write_config

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "20"))
CLIENTS = 4

# Several partitions per category, three partitioners, a default route, small segments so that
# kills land in segment rolls too.
CONFIG = """
[journal]
segment_bytes = 32768
index_interval_bytes = 1024

[[routing.routes]]
category = "crash_rr"
partitions = 3
partitioner = "round-robin"

[[routing.routes]]
category = "crash_kh"
partitions = 2
partitioner = "key-hash"
key_delimiter = ":"

[[routing.routes]]
category = "crash_p*"
partitions = 2
partitioner = "random"

[[routing.routes]]
category = "default"
"""

CATEGORIES = [b"crash_rr", b"crash_kh", b"crash_p.one", b"crash_p.two", b"crash_plain"]


@dataclass
class ClientState:
    cid: int
    framed: bool
    strict: bool
    next_seq: int = 0
    # seq -> category, for every message ever sent (acked or not)
    sent: dict[int, bytes] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    calls_ok: int = 0
    calls_other: int = 0


def message(cid: int, seq: int, rng: random.Random) -> bytes:
    return f"{cid}:{seq}:".encode() + b"x" * rng.randrange(0, 40)


def parse(raw: bytes) -> tuple[int, int]:
    cid, seq, _ = raw.split(b":", 2)
    return int(cid), int(seq)


def load(
    state: ClientState, address: tuple[str, int], stop: threading.Event, rng: random.Random
) -> None:
    """One client: sequential Log calls until ``stop`` or the connection dies."""
    try:
        client = ScribeClient.connect(*address, 3.0, framed=state.framed, strict=state.strict)
    except ClientError:
        return
    with client:
        while not stop.is_set():
            entries = []
            seqs = []
            for category in rng.sample(CATEGORIES, rng.randint(1, 2)):
                for _ in range(rng.randint(1, 12)):
                    seq = state.next_seq
                    state.next_seq += 1
                    state.sent[seq] = category
                    seqs.append(seq)
                    entries.append(
                        LogEntry(category=category, message=message(state.cid, seq, rng))
                    )
            try:
                result = client.log(entries)
            except ClientError:
                state.calls_other += 1
                return  # killed (or stuck): the fate of this call is unknown
            if result == ResultCode.OK:
                state.acked.update(seqs)
                state.calls_ok += 1
            else:
                state.calls_other += 1
                time.sleep(0.01)


@dataclass
class Checker:
    """Reads each partition incrementally across rounds (data below the mark never changes)."""

    journal_dir: Path
    clients: list[ClientState]
    next_offset: dict[PartitionId, int] = field(default_factory=dict)
    last_seq: dict[tuple[PartitionId, int], int] = field(default_factory=dict)
    found: dict[tuple[int, int], PartitionId] = field(default_factory=dict)

    def check(self, label: str) -> int:
        infos = list_partitions(self.journal_dir)
        for info in infos:
            pid = info.pid
            start = self.next_offset.get(pid, info.earliest_offset)
            assert info.high_water_mark is not None, f"{label}: {pid} has no readable hwm file"
            assert info.high_water_mark >= start, (
                f"{label}: {pid} high-water mark went back from {start} to {info.high_water_mark}"
            )
            reader = open_reader(self.journal_dir, pid, start)
            try:
                expected = start
                while batch := reader.read(max_messages=10_000):
                    for m in batch:
                        assert m.offset == expected, f"{label}: {pid} offset gap at {expected}"
                        expected += 1
                        cid, seq = parse(m.message)
                        key = (pid, cid)
                        last = self.last_seq.get(key, -1)
                        assert seq > last, (
                            f"{label}: {pid} client {cid} seq {seq} after {last} "
                            "(duplicate or out of order)"
                        )
                        self.last_seq[key] = seq
                        assert (cid, seq) not in self.found, (
                            f"{label}: client {cid} seq {seq} in {self.found[(cid, seq)]} "
                            f"and again in {pid}"
                        )
                        self.found[(cid, seq)] = pid
                        assert self.clients[cid].sent.get(seq) == pid.category, (
                            f"{label}: client {cid} seq {seq} in the wrong category {pid}"
                        )
                self.next_offset[pid] = expected
            finally:
                reader.close()
        missing = [
            (s.cid, seq) for s in self.clients for seq in s.acked if (s.cid, seq) not in self.found
        ]
        assert not missing, f"{label}: {len(missing)} acknowledged messages lost: {missing[:10]}"
        problems = [p for p in verify_journal(self.journal_dir) if p.fatal]
        assert not problems, f"{label}: verify found {problems}"
        return len(infos)


@pytest.mark.crash
@pytest.mark.timeout(max(120, ROUNDS * 8))
def test_sigkill_under_load_loses_no_acknowledged_message(
    pipeline_server: ServerFactory, tmp_path: Path
) -> None:
    # CRASH_SEED=<n> replays a failure's choices of batches and kill times (not the scheduling).
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
    rng = random.Random(seed)
    journal_dir = tmp_path / "journal"
    config = write_config(tmp_path / "pipeline.toml", CONFIG)
    server = pipeline_server(journal_dir=journal_dir, config=config)
    clients = [ClientState(cid, framed=cid != 3, strict=cid % 2 == 0) for cid in range(CLIENTS)]
    checker = Checker(journal_dir, clients)
    round_times = []

    for round_no in range(ROUNDS):
        began = time.monotonic()
        server.start()
        checker.check(f"CRASH_SEED={seed} round {round_no} after restart")
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=load,
                args=(state, server.address, stop, random.Random(rng.random())),
                daemon=True,
            )
            for state in clients
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.02, 0.6))
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), "a client thread hung after the kill"
        round_times.append(time.monotonic() - began)

    # The last recovery, then a clean stop and one more look.
    server.start()
    partitions = checker.check(f"CRASH_SEED={seed} after the last restart")
    assert server.terminate() == 0
    checker.check(f"CRASH_SEED={seed} after a clean stop")
    # The rounds read incrementally; read everything once more from offset 0.
    Checker(journal_dir, clients).check(f"CRASH_SEED={seed} full re-read")

    acked = sum(len(s.acked) for s in clients)
    assert acked > 0 and sum(s.calls_ok for s in clients) >= ROUNDS
    # Every category and partition received traffic: 3 + 2 + 2*2 (random, two categories) + 1.
    assert partitions >= 8
    # A round is about a second; far more means something stalls (a hang has its own timeouts).
    assert max(round_times) < 20.0, f"a round took {max(round_times):.1f}s"
