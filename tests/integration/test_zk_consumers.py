"""Consumer processes (`pipeline consume`, `pipeline run`) coordinated by the real ZooKeeper.

Each test has its own chroot.  The journal is written by the test itself (8 partitions of one
category, messages ``p<partition>-<sequence>``), so the test knows every message and where it
went; members are real processes, killed and paused with signals.  A monitor task reads the
offset znodes all along and fails the test if one ever goes backwards.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from pipeline_cli import PIPELINE

from consumers import errors as zkerr
from consumers.coordination.zk_client import ZooKeeperClient, ZooKeeperConfig
from journal import Journal, JournalConfig, PartitionId, list_partitions, open_journal, open_reader
from pipeline.services.zookeeper import ManagedZooKeeper
from scribe_compat import LogEntry, ResultCode, ScribeClient

CATEGORY = b"ev"
PARTITIONS = 8
GROUP = "archive"
SESSION_TIMEOUT_S = 2.0
SETTLE_S = 0.5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


# -- configuration and processes -----------------------------------------------------------------


def consumer_config(
    tmp_path: Path,
    zk_config: ZooKeeperConfig,
    *,
    session_timeout_s: float = SESSION_TIMEOUT_S,
    extra: str = "",
    sink: str = "",
) -> Path:
    path = tmp_path / "consumer.toml"
    sink = (
        sink
        or f"""
sink = "files"
[consumers.files]
file_path = "{tmp_path / "files"}"
add_newlines = true
"""
    )
    path.write_text(
        f"""
[journal]
dir = "{tmp_path / "journal"}"
[coordination]
kind = "zookeeper"
settle_s = {SETTLE_S}
rescan_interval_s = 0.5
revoke_timeout_s = 5.0
[coordination.zookeeper]
hosts = "{zk_config.hosts}"
chroot = "{zk_config.chroot}"
session_timeout_s = {session_timeout_s}
connect_timeout_s = 10.0
request_timeout_s = 3.0
[log]
format = "json"
status_interval_s = 1.0
{extra}
[[consumers]]
name = "{GROUP}"
categories = ["*"]
commit_interval_s = 0.2
discover_interval_s = 0.5
batch_wait_s = 0.02
{sink}
"""
    )
    return path


@dataclass
class Member:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def records(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def messages(self, text: str) -> list[dict[str, object]]:
        return [r for r in self.records() if r.get("msg") == text or r.get("message") == text]


class Members:
    """The consumer processes of one test; whatever is left is killed at the end."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.all: list[Member] = []
        self._count = 0

    def start(self) -> Member:
        self._count += 1
        log = self.tmp_path / f"member-{self._count}.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [*PIPELINE, "consume", "--config", str(self.config), "--group", GROUP],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        member = Member(f"m{self._count}", proc, log)
        self.all.append(member)
        return member

    @property
    def alive(self) -> list[Member]:
        return [m for m in self.all if m.alive()]

    def by_pid(self, pid: int) -> Member | None:
        return next((m for m in self.all if m.pid == pid), None)

    def close(self) -> None:
        for member in self.alive:
            member.proc.send_signal(signal.SIGCONT)
            member.proc.send_signal(signal.SIGTERM)
        for member in self.all:
            try:
                member.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                member.proc.kill()
                member.proc.wait()


@pytest.fixture
def members(tmp_path: Path, zk_config: ZooKeeperConfig) -> Iterator[Members]:
    group = Members(tmp_path, consumer_config(tmp_path, zk_config))
    try:
        yield group
    finally:
        group.close()


def member_pid(member_id: str) -> int:
    # Default member ids are <host>-<pid>-<object id>.
    return int(member_id.rsplit("-", 2)[1])


# -- the journal and the sink --------------------------------------------------------------------


class Writer:
    """Appends ``p<partition>-<seq>`` messages to the test's journal and remembers them."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}

    async def write(self, partition: int, count: int) -> None:
        start = len(self.sent[partition])
        batch = [b"p%d-%07d" % (partition, start + i) for i in range(count)]
        with trio.CancelScope(shield=True):  # what was appended is always recorded
            await self.journal.append(CATEGORY, partition, batch)
            self.sent[partition].extend(batch)

    async def write_all(self, count: int) -> None:
        for partition in range(PARTITIONS):
            await self.write(partition, count)

    async def flow(self, per_round: int = 5, interval_s: float = 0.05) -> None:
        """Keep events flowing until cancelled."""
        while True:
            await self.write_all(per_round)
            await trio.sleep(interval_s)

    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())

    def all_messages(self) -> set[bytes]:
        return {m for v in self.sent.values() for m in v}


def sink_lines(root: Path) -> list[bytes]:
    directory = root / CATEGORY.decode()
    lines: list[bytes] = []
    if directory.is_dir():
        for path in sorted(directory.glob("ev_[0-9]*")):
            lines.extend(path.read_bytes().splitlines())
    return lines


# -- ZooKeeper views -------------------------------------------------------------------------------


def base() -> str:
    return f"/groups/{GROUP}"


async def owners(zk: ZooKeeperClient) -> dict[int, str]:
    """Partition -> owning member id, from the owner znodes."""
    out: dict[int, str] = {}
    try:
        names = await zk.get_children(f"{base()}/owners/ev")
    except zkerr.NoNode:
        return out
    for name in names:
        try:
            data, _ = await zk.get(f"{base()}/owners/ev/{name}")
        except zkerr.NoNode:
            continue
        out[int(name)] = str(json.loads(data)["member"])
    return out


async def offsets(zk: ZooKeeperClient) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for partition in range(PARTITIONS):
        try:
            data, _ = await zk.get(f"{base()}/partitions/ev/{partition}/offset")
        except zkerr.NoNode:
            continue
        out[partition] = int(data) if data else None
    return out


class OffsetMonitor:
    """Reads the offset znodes every 50 ms; records any offset that went backwards."""

    def __init__(self, zk: ZooKeeperClient) -> None:
        self.zk = zk
        self.last: dict[int, int] = {}
        self.backwards: list[tuple[int, int, int]] = []
        self.reads = 0

    async def run(self) -> None:
        while True:
            try:
                current = await offsets(self.zk)
            except zkerr.ZooKeeperError:
                await trio.sleep(0.2)  # ZooKeeper down (the restart test): try again
                continue
            self.reads += 1
            for partition, offset in current.items():
                if offset is None:
                    continue
                previous = self.last.get(partition, 0)
                if offset < previous:
                    self.backwards.append((partition, previous, offset))
                self.last[partition] = max(previous, offset)
            await trio.sleep(0.05)


async def wait_for(predicate: object, limit_s: float, what: str) -> float:
    """Poll an async or sync predicate; returns the seconds it took."""
    began = time.monotonic()
    with trio.move_on_after(limit_s):
        while True:
            result = predicate()  # type: ignore[operator]
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return time.monotonic() - began
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what}")


async def caught_up(zk: ZooKeeperClient, writer: Writer) -> bool:
    committed = await offsets(zk)
    return all(committed.get(p) == len(writer.sent[p]) for p in range(PARTITIONS))


def balanced(view: dict[int, str], live: int) -> bool:
    counts = sorted({m: list(view.values()).count(m) for m in set(view.values())}.values())
    low, high = divmod(PARTITIONS, live)
    return (
        len(view) == PARTITIONS
        and len(counts) == live
        and all(c in (low, low + (1 if high else 0)) for c in counts)
    )


# -- tests -----------------------------------------------------------------------------------------


async def test_three_members_share_eight_partitions_and_take_over_from_a_killed_one(
    tmp_path: Path, zk: ZooKeeperClient, members: Members
) -> None:
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        writer = Writer(journal)
        await writer.write_all(100)
        monitor = OffsetMonitor(zk)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            for _ in range(3):
                members.start()

            await wait_for(lambda: _balanced_view(zk, 3), 30, "3 members to own 8 partitions")
            stable = await owners(zk)
            await trio.sleep(1.0)  # settled: the assignment stays put
            assert await owners(zk) == stable
            assert len(set(stable.values())) == 3
            assert {member_pid(m) for m in stable.values()} == {m.pid for m in members.alive}
            await wait_for(lambda: caught_up(zk, writer), 30, "the backlog to be consumed")

            shown = _offsets_show(members.config)
            assert len(shown) == PARTITIONS
            listed = shown[0]["members"]
            assert isinstance(listed, list) and sorted(listed) == sorted(set(stable.values()))
            refused = _cli("offsets", "reset", "--config", members.config, "-g", GROUP,
                           "--to", "earliest", check=False)  # fmt: skip
            assert refused.returncode == 1 and "active" in refused.stderr

            victim = members.alive[0]
            theirs = sorted(p for p, m in stable.items() if member_pid(m) == victim.pid)
            assert theirs
            victim.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.proc.wait()
            for partition in theirs:  # new events only the victim's partitions carry
                await writer.write(partition, 1)
            markers = {writer.sent[p][-1] for p in theirs}

            await wait_for(
                lambda: markers <= set(sink_lines(tmp_path / "files")),
                SESSION_TIMEOUT_S + SETTLE_S + 15,
                "the killed member's partitions to be consumed again",
            )
            recovery = time.monotonic() - killed_at
            print(
                f"\nSIGKILL -> partitions {theirs} consumed again in {recovery:.2f} s "
                f"(session timeout {SESSION_TIMEOUT_S} s + settle {SETTLE_S} s)"
            )
            assert recovery < SESSION_TIMEOUT_S + SETTLE_S + 5
            await wait_for(lambda: _balanced_view(zk, 2), 10, "2 members to own 8 partitions")
            after = await owners(zk)
            for partition, owner in stable.items():
                if partition not in theirs:
                    assert after[partition] == owner  # sticky: survivors kept theirs
            await wait_for(lambda: caught_up(zk, writer), 30, "everything to be committed")
            nursery.cancel_scope.cancel()
    assert monitor.reads > 10 and monitor.backwards == []
    assert writer.all_messages() <= set(sink_lines(tmp_path / "files"))

    # An operator's forced reset moves the offset back and fences the owner, which takes the
    # partition up again from there: partition 0 is consumed a second time.
    epoch_path = f"{base()}/partitions/ev/0/epoch"
    epoch_before = (await zk.get(epoch_path))[1].version
    lines_before = len(sink_lines(tmp_path / "files"))
    reset = _cli("offsets", "reset", "--config", members.config, "-g", GROUP, "-p", "0",
                 "--to", "earliest", "--force")  # fmt: skip
    assert json.loads(reset.stdout.splitlines()[0])["offset"] == 0
    await wait_for(lambda: caught_up(zk, writer), 30, "partition 0 to be consumed again")
    assert (await zk.get(epoch_path))[1].version >= epoch_before + 2  # reset, then a takeover
    assert len(sink_lines(tmp_path / "files")) >= lines_before + len(writer.sent[0])


async def _balanced_view(zk: ZooKeeperClient, live: int) -> bool:
    return balanced(await owners(zk), live)


def _cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PIPELINE, *map(str, args)], check=False, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args}: exit {result.returncode}\n{result.stderr}")
    return result


def _offsets_show(config: Path) -> list[dict[str, object]]:
    out = _cli("offsets", "show", "--config", config, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


async def test_paused_member_is_fenced_and_offsets_never_go_backwards(
    tmp_path: Path, zk: ZooKeeperClient, members: Members
) -> None:
    from consumers import Fenced
    from consumers.coordination.zookeeper import ZooKeeperCoordinator

    admin = ZooKeeperCoordinator(zk.config, GROUP, "admin")
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        writer = Writer(journal)
        await writer.write_all(20)
        monitor = OffsetMonitor(zk)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            nursery.start_soon(writer.flow)
            paused, other = members.start(), members.start()
            await wait_for(lambda: _balanced_view(zk, 2), 30, "2 members to share")
            before = await owners(zk)
            leases = {}
            for partition, owner in before.items():
                if member_pid(owner) == paused.pid:
                    leases[partition] = await admin.current_epoch(PartitionId(CATEGORY, partition))
            committed_before = await offsets(zk)

            paused.proc.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            await wait_for(
                lambda: _all_owned_by(zk, other.pid), SESSION_TIMEOUT_S + SETTLE_S + 15,
                "the other member to take over",
            )  # fmt: skip
            # The new owner commits past where the paused member stood.
            await wait_for(
                lambda: _advanced(zk, committed_before, leases), 30, "commits by the new owner"
            )
            takeover = time.monotonic() - stopped_at
            await trio.sleep(max(0.0, SESSION_TIMEOUT_S + 1 - takeover))
            paused.proc.send_signal(signal.SIGCONT)

            # Its leases are dead: a commit with any of them is fenced, from any session.
            for partition, epoch in leases.items():
                assert epoch is not None
                with pytest.raises(Fenced):
                    await admin.commit(PartitionId(CATEGORY, partition), 10**9, epoch)
            # It notices, drops everything, rejoins with a new session and gets a share again.
            await wait_for(lambda: _owns_some(zk, paused.pid), 30, "the resumed member to rejoin")
            await wait_for(lambda: _balanced_view(zk, 2), 30, "2 members to share again")
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            await wait_for(lambda: caught_up(zk, writer), 30, "everything to be committed")
            nursery.cancel_scope.cancel()

    lost = [r for r in paused.messages("partition lost")]
    rejected = paused.messages("commit fenced; partition dropped") + paused.messages(
        "commit failed"
    )
    print(
        f"\npaused member: {len(lost)} leases lost "
        f"({sorted({str(r.get('reason')) for r in lost})}), {len(rejected)} commits rejected "
        f"({len(paused.messages('commit fenced; partition dropped'))} fenced); "
        f"takeover {takeover:.2f} s after SIGSTOP"
    )
    assert len(lost) >= len(leases)
    assert monitor.backwards == []
    for partition, offset in monitor.last.items():
        assert offset != 10**9 and offset <= len(writer.sent[partition])
    assert writer.all_messages() <= set(sink_lines(tmp_path / "files"))


async def _all_owned_by(zk: ZooKeeperClient, pid: int) -> bool:
    view = await owners(zk)
    return len(view) == PARTITIONS and all(member_pid(m) == pid for m in view.values())


async def _owns_some(zk: ZooKeeperClient, pid: int) -> bool:
    return any(member_pid(m) == pid for m in (await owners(zk)).values())


async def _advanced(
    zk: ZooKeeperClient, before: dict[int, int | None], partitions: dict[int, int | None]
) -> bool:
    now = await offsets(zk)
    return all((now.get(p) or 0) > (before.get(p) or 0) for p in partitions)


async def test_churn_of_members_loses_nothing(
    tmp_path: Path, zk: ZooKeeperClient, members: Members
) -> None:
    rng = random.Random(int(os.environ.get("CHURN_SEED", "7")))
    rounds = int(os.environ.get("CHURN_ROUNDS", "10"))
    async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
        writer = Writer(journal)
        monitor = OffsetMonitor(zk)
        kills = starts = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            nursery.start_soon(writer.flow)
            members.start()
            for _ in range(rounds):
                await trio.sleep(rng.uniform(1.0, 3.0))
                alive = members.alive
                if len(alive) >= 3 or (len(alive) > 1 and rng.random() < 0.5):
                    rng.choice(alive).proc.send_signal(signal.SIGKILL)
                    kills += 1
                else:
                    members.start()
                    starts += 1
            survivors = members.alive
            if not survivors:
                members.start()
            for extra in survivors[1:]:
                extra.proc.send_signal(signal.SIGKILL)
            nursery.cancel_scope.cancel()  # events stop flowing
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor.run)
            took = await wait_for(lambda: caught_up(zk, writer), 60, "the last member to catch up")
            nursery.cancel_scope.cancel()
    lines = sink_lines(tmp_path / "files")
    missing = writer.all_messages() - set(lines)
    print(
        f"\nchurn: {rounds} rounds, {starts} starts, {kills} SIGKILLs, {writer.total()} events, "
        f"{len(lines)} lines in the sink ({len(lines) - writer.total()} redelivered), "
        f"caught up {took:.1f} s after the churn"
    )
    assert missing == set()
    assert monitor.backwards == []


async def test_zookeeper_restart_pauses_and_resumes_consumers(
    tmp_path: Path,
    zk: ZooKeeperClient,
    zk_config: ZooKeeperConfig,
    zk_server: ManagedZooKeeper,
) -> None:
    if zk_server.managed_pid() is None or zk_server.address != zk_config.hosts:
        pytest.skip("needs the ZooKeeper that `pipeline services start` started here")
    config = consumer_config(tmp_path, zk_config, session_timeout_s=6.0)
    group = Members(tmp_path, config)
    try:
        async with open_journal(tmp_path / "journal", JournalConfig()) as journal:
            writer = Writer(journal)
            monitor = OffsetMonitor(zk)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(monitor.run)
                nursery.start_soon(writer.flow)
                first, second = group.start(), group.start()
                await wait_for(lambda: _balanced_view(zk, 2), 30, "2 members to share")
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(zk_server.stop, lambda _m: None)
                down_at = time.monotonic()
                await trio.sleep(2.0)  # consumers see SUSPENDED and stop writing
                await trio.to_thread.run_sync(zk_server.start, lambda _m: None, 60.0)
                downtime = time.monotonic() - down_at
                await wait_for(lambda: _balanced_view(zk, 2), 40, "ownership after restart")
                resumed = time.monotonic() - down_at
                nursery.cancel_scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(monitor.run)
                await wait_for(lambda: caught_up(zk, writer), 40, "everything to be committed")
                nursery.cancel_scope.cancel()
        assert first.alive() and second.alive()
        suspended = [
            r
            for m in (first, second)
            for r in m.messages("zookeeper connection")
            if r.get("state") == "suspended"
        ]
        print(
            f"\nZooKeeper down {downtime:.1f} s; partitions owned again {resumed:.1f} s after "
            f"the stop; {len(suspended)} members saw SUSPENDED"
        )
        assert len(suspended) >= 2
        assert monitor.backwards == []
        assert writer.all_messages() <= set(sink_lines(tmp_path / "files"))
    finally:
        group.close()


# -- forwarding ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def start_server(config: Path, log: Path, command: str = "serve") -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [*PIPELINE, command, "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not connectable(port):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"port {port} not listening\n{log.read_text()}"
        time.sleep(0.05)


def journal_messages(directory: Path) -> dict[PartitionId, list[bytes]]:
    out: dict[PartitionId, list[bytes]] = {}
    for info in list_partitions(directory):
        with open_reader(directory, info.pid, 0) as reader:
            messages: list[bytes] = []
            while batch := reader.read(10_000):
                messages.extend(m.message for m in batch)
        out[info.pid] = messages
    return out


async def test_forwarding_survives_upstream_restart(
    tmp_path: Path, zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    """Server A (`pipeline run`: server + an embedded forwarding member on ZooKeeper) forwards
    to server B; B is stopped for a while mid-stream and restarted on the same port and journal.
    Every message reaches B, in order within each of A's partitions, and A's counters show the
    retries."""
    await trio.to_thread.run_sync(_forward_through_restart, tmp_path, zk_config)


def _forward_through_restart(tmp_path: Path, zk_config: ZooKeeperConfig) -> None:
    port_a, port_b = free_port(), free_port()
    config_b = tmp_path / "b.toml"
    config_b.write_text(
        f'[server]\nport = {port_b}\n[journal]\ndir = "{tmp_path / "journal-b"}"\n'
        "[server.limits]\nmax_entries_per_call = 100000\n"
    )
    forward = f"""
sink = "forward"
[consumers.forward]
host = "127.0.0.1"
port = {port_b}
timeout_s = 2.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
"""
    extra = f"""
[server]
port = {port_a}
[[routing.routes]]
category = "default"
partitions = 4
[services.zookeeper]
enabled = false
"""
    config_a = consumer_config(tmp_path, zk_config, extra=extra, sink=forward)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    server_b = start_server(config_b, log_b)
    server_a = start_server(config_a, log_a, "run")
    try:
        wait_listening(port_b, server_b, log_b)
        wait_listening(port_a, server_a, log_a)
        total, per_call = 6000, 100
        with ScribeClient.connect("127.0.0.1", port_a) as client:
            for seq in range(0, total, per_call):
                entries = [
                    LogEntry(category=b"fwd", message=b"m%07d" % n)
                    for n in range(seq, seq + per_call)
                ]
                while client.log(entries) != ResultCode.OK:
                    time.sleep(0.05)
                if seq == total // 3:
                    server_b.send_signal(signal.SIGTERM)
                    assert server_b.wait(timeout=30) == 0
                    stopped_for = time.monotonic()
                if seq == total // 3 + 2000:
                    time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped_for)))
                    server_b = start_server(config_b, log_b)
                    wait_listening(port_b, server_b, log_b)
                time.sleep(0.005)
            counters = client.get_counters()
            deadline = time.monotonic() + 60
            while counters.get("consumer archive:sink sent", 0) < total:
                assert time.monotonic() < deadline, counters
                time.sleep(0.2)
                counters = client.get_counters()
        server_b.send_signal(signal.SIGTERM)
        assert server_b.wait(timeout=30) == 0
        server_a.send_signal(signal.SIGTERM)
        assert server_a.wait(timeout=30) == 0
    finally:
        for proc in (server_a, server_b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    source = journal_messages(tmp_path / "journal")
    arrived = [m for ms in journal_messages(tmp_path / "journal-b").values() for m in ms]
    assert sum(len(v) for v in source.values()) == total
    assert set(arrived) == {b"m%07d" % n for n in range(total)}
    first_seen = {m: i for i, m in reversed(list(enumerate(arrived)))}
    for pid, messages in source.items():
        positions = [first_seen[m] for m in messages]
        assert positions == sorted(positions), f"{pid} out of order at B"
    sent, retries = counters["scribe_overall:sent"], counters["scribe_overall:retries"]
    print(
        f"\nforwarded {total} messages through a restart of B: sent={sent} retries={retries}, "
        f"{len(arrived) - total} duplicates at B"
    )
    assert counters["scribe_overall:retries"] > 0
