"""Consumer failover on a ZooKeeper ensemble: how long a dead member's partitions go unconsumed.

For each setting (``session_timeout_s``, ``settle_s``): a fresh `pipeline serve` with its journal
on this host, ``members`` `pipeline consume` members of one group reading that journal's files
(``[coordination] kind = "zookeeper"``, a chroot of their own, each member's files sink in a
directory of its own), and a sender at a steady rate over ``partitions`` categories of one
partition each.  A round waits until every partition is owned, every member owns some, ownership
has not changed for ``STEADY_S`` and every owner is writing; then it signals one member (in turn)
and measures, for each partition that member owned:

* ``left_s`` (per round): from the signal until the member's node is gone from the group (its
  session expired after SIGKILL, or was closed by the graceful stop), to a poll;
* ``owned_s``: from the signal until another member created its owner node (the node's creation
  time, ZooKeeper's clock on this same machine: exact, unlike the polls);
* ``resumed_s``: from the signal until another member's output of it grows (delivering again);
* ``gap_s``: from the signalled member's last write of it to that first write by the new owner,
  the pause a reader of the sink's files sees (after SIGTERM the member may still write while
  it drains, so this can be shorter than ``resumed_s``).

ZooKeeper expires sessions once a tick (conf/services/zoo.cfg: tickTime 500 ms, sessions of 1 to
60 s), so after SIGKILL ``left_s`` is the session timeout plus up to a tick.

A round's figure is the worst of its partitions (the time until *every* one is delivering
again).  The member is then started again, and the group rebalances before the next round.  At
the end of a setting the sender stops and every acknowledged message must reach the files
(at-least-once: duplicates are counted, a loss fails the benchmark).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import trio

from consumers.coordination.zk_client import ZooKeeperConfig, open_zookeeper
from journal import category_dir_name

from .procs import Children, free_port, load_average, progress
from .sender import Sender
from .stats import spread
from .watch import OutputWatch, OwnerWatch

GROUP = "bench"
# Before a round, ownership must not have changed for this long, and every partition must have
# been written by its owner within DELIVERING_S: the group is settled and consuming.
STEADY_S = 2.0
DELIVERING_S = 1.0
# Members start (a few seconds of imports on a busy machine), join and take their share in
# well under this; past it the benchmark fails with the members' logs.
STEADY_TIMEOUT_S = 90.0
# A round waits session_timeout_s + settle_s plus this for the takeover before it fails.
ROUND_SLACK_S = 30.0
# After the sender stops, the members get this long to write every acknowledged message.
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Setting:
    session_timeout_s: float
    settle_s: float

    @property
    def label(self) -> str:
        return f"session {self.session_timeout_s:g} s, settle {self.settle_s:g} s"


@dataclass(frozen=True)
class FailoverOptions:
    hosts: str
    settings: list[Setting]
    signals: list[signal.Signals]
    rounds: int
    members: int
    partitions: int
    rate: float
    poll_s: float

    def __post_init__(self) -> None:
        if self.partitions < self.members:
            # Steady means every member owns a partition: impossible with fewer partitions.
            raise SystemExit("--partitions must be at least --members")


@dataclass(frozen=True)
class RoundResult:
    setting: Setting
    signal: str
    round: int
    victim: int
    partitions: list[str]
    # When its member node was seen gone (session expired, or closed by a graceful stop).
    left_s: float | None
    owned_s: list[float]
    resumed_s: list[float]
    gap_s: list[float]

    def json(self) -> dict[str, object]:
        return {
            "session_timeout_s": self.setting.session_timeout_s,
            "settle_s": self.setting.settle_s,
            "signal": self.signal,
            "round": self.round,
            "victim": self.victim,
            "partitions": self.partitions,
            "left_s": self.left_s,
            "owned_s": max(self.owned_s),
            "resumed_s": max(self.resumed_s),
            "gap_s": max(self.gap_s) if self.gap_s else None,
            "per_partition": {
                "owned_s": self.owned_s,
                "resumed_s": self.resumed_s,
                "gap_s": self.gap_s,
            },
        }


def _server_config(work: Path, port: int) -> str:
    return f"""
[server]
port = {port}
[journal]
dir = "{work / "journal"}"
[services.zookeeper]
enabled = false
[services.cassandra]
enabled = false
[log]
format = "json"
level = "warning"
"""


def _member_config(
    work: Path, options: FailoverOptions, setting: Setting, chroot: str, slot: int
) -> str:
    # Every other key keeps its default (batch_wait_s 0.05, commit_interval_s 1, rescan 1 s):
    # the figures are those of a group configured with only these two changed.
    return f"""
[journal]
dir = "{work / "journal"}"
[coordination]
kind = "zookeeper"
settle_s = {setting.settle_s}
[coordination.zookeeper]
hosts = "{options.hosts}"
chroot = "{chroot}"
session_timeout_s = {setting.session_timeout_s}
# The ensemble is run by `pipeline services`; a member must not start servers of its own.
[services.zookeeper]
enabled = false
[services.cassandra]
enabled = false
[log]
format = "json"
[[consumers]]
name = "{GROUP}"
categories = ["*"]
sink = "files"
[consumers.files]
file_path = "{work / f"out-{slot}"}"
add_newlines = true
"""


class _Group:
    """One setting's daemons: the log server and the members, by slot."""

    def __init__(self, work: Path, options: FailoverOptions, setting: Setting, chroot: str) -> None:
        work.mkdir(parents=True)
        self.work = work
        self.options = options
        self.children = Children(work)
        self.port = free_port()
        (work / "serve.toml").write_text(_server_config(work, self.port))
        for slot in range(options.members):
            (work / f"member-{slot}.toml").write_text(
                _member_config(work, options, setting, chroot, slot)
            )

    def start_server(self) -> None:
        self.children.start("serve", "serve", "--config", self.work / "serve.toml")
        self.children.wait_listening("serve", self.port)

    def start_member(self, slot: int) -> None:
        config = self.work / f"member-{slot}.toml"
        self.children.start(f"member-{slot}", "consume", "--config", config, "--group", GROUP)

    def pid(self, slot: int) -> int:
        return self.children.procs[f"member-{slot}"].pid

    def check_alive(self) -> None:
        for name, proc in self.children.procs.items():
            if proc.poll() is not None:
                raise SystemExit(
                    f"{name} exited {proc.returncode}:\n{self.children.log_tail(name)}"
                )


async def _wait_steady(
    group: _Group, owners: OwnerWatch, outputs: OutputWatch, categories: list[bytes]
) -> dict[int, str]:
    """Member id by slot, once every slot owns partitions, stably, and every owner writes."""
    slots = range(group.options.members)
    with trio.move_on_after(STEADY_TIMEOUT_S):
        while True:
            group.check_alive()
            ids = {slot: owners.member_of(group.pid(slot)) for slot in slots}
            slot_of = {member: slot for slot, member in ids.items() if member is not None}
            now = time.monotonic()
            owning = [slot_of.get(owners.owner.get(c) or "") for c in categories]
            if (
                len(slot_of) == len(ids)
                and set(owning) == set(slots)
                and now - owners.stable_since() >= STEADY_S
                and all(
                    outputs.wrote_since(c, slot, now - DELIVERING_S)
                    for c, slot in zip(categories, owning, strict=True)
                    if slot is not None
                )
            ):
                return {slot: member for slot, member in ids.items() if member is not None}
            await trio.sleep(group.options.poll_s)
    raise SystemExit(
        f"the group did not settle within {STEADY_TIMEOUT_S:g} s (owners {owners.owner}); "
        f"logs in {group.work}"
    )


async def _one_round(
    group: _Group,
    owners: OwnerWatch,
    outputs: OutputWatch,
    categories: list[bytes],
    setting: Setting,
    sig: signal.Signals,
    number: int,
) -> RoundResult:
    ids = await _wait_steady(group, owners, outputs, categories)
    victim = number % group.options.members
    victim_id = ids[victim]
    owned = [c for c in categories if owners.owner.get(c) == victim_id]
    began = time.monotonic()
    began_wall = time.time()  # ownership comes with ZooKeeper's wall-clock creation time
    os.kill(group.pid(victim), sig)
    limit = setting.session_timeout_s + setting.settle_s + ROUND_SLACK_S
    with trio.move_on_after(limit) as scope:
        # The watches poll files and ZooKeeper themselves: polling their state is all there is.
        while not all(  # noqa: ASYNC110
            owners.taken_over(c, began, victim_id) is not None
            and outputs.first_after(c, began, victim) is not None
            for c in owned
        ):
            await trio.sleep(group.options.poll_s)
    if scope.cancelled_caught:
        raise SystemExit(
            f"member {victim}'s partitions were not taken over within {limit:g} s "
            f"(owners {owners.owner}); logs in {group.work}"
        )
    owned_s, resumed_s, gap_s = [], [], []
    for category in owned:
        taken = owners.taken_over(category, began, victim_id)
        resumed = outputs.first_after(category, began, victim)
        assert taken is not None and resumed is not None
        owned_s.append(round(taken - began_wall, 3))
        resumed_s.append(round(resumed - began, 3))
        last = outputs.last_by(category, victim, resumed)
        if last is not None:
            gap_s.append(round(resumed - last, 3))
    left = owners.left(victim_id, began)
    # SIGKILL: gone already; SIGTERM: it drains (bounded by Children.reap).
    await trio.to_thread.run_sync(group.children.reap, f"member-{victim}")
    group.start_member(victim)
    return RoundResult(
        setting=setting,
        signal=sig.name,
        round=number,
        victim=victim,
        partitions=[c.decode() for c in owned],
        left_s=round(left - began, 3) if left is not None else None,
        owned_s=owned_s,
        resumed_s=resumed_s,
        gap_s=gap_s,
    )


def _delivered(out_dirs: list[Path], category: bytes, acked: int) -> tuple[int, int]:
    """(how many of the messages 0..acked-1 of ``category`` no output holds, lines written)."""
    seen = bytearray(acked)
    lines = 0
    name = category_dir_name(category)
    for out_dir in out_dirs:
        directory = out_dir / name
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.name.startswith(".") or path.is_symlink():
                continue
            for line in path.read_bytes().splitlines():
                lines += 1
                seq = int(line)
                if seq < acked:
                    seen[seq] = 1
    return acked - sum(seen), lines


async def _drain(out_dirs: list[Path], sender: Sender) -> dict[str, int]:
    """Wait until every acknowledged message is in the outputs; the totals."""
    missing = acked = lines = 0
    with trio.move_on_after(DRAIN_TIMEOUT_S):
        while True:
            missing = lines = 0
            acked = sum(sender.acked.values())
            for category, count in sender.acked.items():
                lost, written = await trio.to_thread.run_sync(_delivered, out_dirs, category, count)
                missing += lost
                lines += written
            if missing == 0:
                break
            await trio.sleep(1.0)
    return {"acked": acked, "missing": missing, "duplicates": lines - (acked - missing)}


async def _run_setting(
    work: Path, options: FailoverOptions, setting: Setting
) -> tuple[list[RoundResult], dict[str, int]]:
    chroot = f"/bench-cluster-{uuid.uuid4().hex[:10]}"
    categories = [b"c%d" % i for i in range(options.partitions)]
    out_dirs = [work / f"out-{slot}" for slot in range(options.members)]
    group = _Group(work, options, setting, chroot)
    zk = ZooKeeperConfig(hosts=options.hosts, chroot=chroot)
    results: list[RoundResult] = []
    try:
        group.start_server()
        async with open_zookeeper(zk) as client, trio.open_nursery() as watchers:
            outputs = OutputWatch(out_dirs, categories, options.poll_s)
            owners = OwnerWatch(client, GROUP, categories, options.poll_s)
            watchers.start_soon(outputs.run)
            watchers.start_soon(owners.run)
            sender = Sender(("127.0.0.1", group.port), categories, options.rate)
            async with trio.open_nursery() as sending:
                sending.start_soon(sender.run)
                for slot in range(options.members):
                    group.start_member(slot)
                number = 0
                for sig in options.signals:
                    for _ in range(options.rounds):
                        progress(
                            f"{setting.label}: {sig.name} round {number + 1} "
                            f"(load {load_average()})"
                        )
                        result = await _one_round(
                            group, owners, outputs, categories, setting, sig, number
                        )
                        progress(
                            f"  member {result.victim}: left after {result.left_s} s, owned "
                            f"again after "
                            f"{max(result.owned_s):.2f} s, delivering after "
                            f"{max(result.resumed_s):.2f} s"
                        )
                        print(json.dumps(result.json()), flush=True)
                        results.append(result)
                        number += 1
                sending.cancel_scope.cancel()
            progress(f"{setting.label}: waiting for every acknowledged message in the files")
            totals = await _drain(out_dirs, sender)
            totals["sender_retries"] = sender.failures
            totals["zookeeper_poll_errors"] = owners.errors
            watchers.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(group.children.close)
        async with open_zookeeper(ZooKeeperConfig(hosts=options.hosts)) as root:
            await root.delete(chroot, recursive=True)
    if totals["missing"]:
        raise SystemExit(f"{totals['missing']} acknowledged messages never reached the files")
    return results, totals


async def run_failover(work: Path, options: FailoverOptions) -> list[dict[str, object]]:
    """Every setting's rounds (one JSON line each on standard output); the summary per setting
    and signal."""
    summary: list[dict[str, object]] = []
    for index, setting in enumerate(options.settings):
        results, totals = await _run_setting(work / f"setting-{index}", options, setting)
        for sig in options.signals:
            mine = [r for r in results if r.signal == sig.name]
            summary.append(
                {
                    "session_timeout_s": setting.session_timeout_s,
                    "settle_s": setting.settle_s,
                    "signal": sig.name,
                    "left_s": spread([r.left_s for r in mine if r.left_s is not None]),
                    "owned_s": spread([max(r.owned_s) for r in mine]),
                    "resumed_s": spread([max(r.resumed_s) for r in mine]),
                    "gap_s": spread([max(r.gap_s) for r in mine if r.gap_s]),
                    **totals,
                }
            )
    return summary
