"""A hypothesis state machine over appends, crashes and reopens.

Invariant: every acknowledged message (and anything a reader has seen since) survives every crash
and recovery at its offset, offsets are dense from the earliest to the high-water mark, the
high-water mark never goes back, and message times strictly increase along the partition.  A crash
is a copy of the journal taken while it is open (what ``kill -9`` leaves, since the journal buffers
nothing in user space), whose tail is then torn, garbled or has a flipped byte after the durable
point, optionally with the checkpoint file of an earlier moment (a power loss that did not persist
its last rewrite).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from journal import JournalConfig, PartitionId, open_journal
from journal.format import encode_batch

PID = PartitionId(b"sm", 0)
CONFIG = JournalConfig(segment_bytes=200, index_interval_bytes=64)

messages = st.binary(min_size=0, max_size=40)
batches = st.lists(st.lists(messages, min_size=1, max_size=4), min_size=1, max_size=4)


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="journal-sm-"))
        self.generation = 0
        self.dir = self.root / "0"
        self.model: dict[int, bytes] = {}  # offset -> message: acknowledged or seen by a reader
        self.hwm = 0
        self.checked = True

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _part(self) -> Path:
        return self.dir / "sm" / "0"

    async def _append(self, journal, batch: list[bytes]) -> None:
        result = await journal.append(PID.category, PID.partition, batch)
        assert result.count == len(batch)
        for i, message in enumerate(batch):
            assert result.base_offset + i not in self.model, "offset reused"
            self.model[result.base_offset + i] = message

    @rule(data=batches)
    def append_and_close(self, data: list[list[bytes]]) -> None:
        async def main() -> None:
            async with (
                open_journal(self.dir, CONFIG) as journal,
                trio.open_nursery() as nursery,  # concurrent appends: one group commit
            ):
                for batch in data:
                    nursery.start_soon(self._append, journal, batch)

        trio.run(main)
        self.checked = False

    @rule(
        data=batches,
        damage=st.sampled_from(["none", "torn", "garbage", "flipped"]),
        where=st.integers(min_value=0, max_value=10_000),
        garbage=st.binary(min_size=1, max_size=300),
        stale_checkpoint=st.booleans(),
    )
    def crash(
        self,
        data: list[list[bytes]],
        damage: str,
        where: int,
        garbage: bytes,
        stale_checkpoint: bool,
    ) -> None:
        self.generation += 1
        image = self.root / str(self.generation)
        old_checkpoint: list[bytes] = []

        async def main() -> None:
            async with open_journal(self.dir, CONFIG) as journal:
                hwm_path = self._part() / "hwm"
                if hwm_path.exists():
                    old_checkpoint.append(hwm_path.read_bytes())
                for batch in data:
                    await self._append(journal, batch)
                shutil.copytree(self.dir, image)  # the crash: the journal is still open
                next_offset = journal.high_water_mark(PID)
                with journal.open_reader(PID, next_offset - 1) as reader:
                    last_us = reader.read()[-1].timestamp_us
            self.dir = image
            segment = sorted(self._part().glob("*.log"))[-1]
            # stamped as the writer would have stamped it
            ts_ms, first_us = divmod(last_us + 1, 1000)
            unacked = encode_batch([b"unacked", garbage], None, next_offset, ts_ms, first_us)
            with segment.open("ab") as f:
                if damage == "torn":
                    f.write(unacked[: where % len(unacked)])
                elif damage == "garbage":
                    f.write(garbage)
                elif damage == "flipped":
                    flipped = bytearray(unacked)
                    flipped[where % len(flipped)] ^= 1 << (where % 8)
                    f.write(bytes(flipped))
            if stale_checkpoint and old_checkpoint:
                (self._part() / "hwm").write_bytes(old_checkpoint[0])

        trio.run(main)
        self.checked = False

    @precondition(lambda self: not self.checked)
    @rule()
    def reopen(self) -> None:
        self._check()

    @invariant()
    def acknowledged_messages_survive(self) -> None:
        if not self.checked:
            self._check()

    def _check(self) -> None:
        async def main() -> list[tuple[int, bytes, int, int]]:
            async with open_journal(self.dir, CONFIG) as journal:
                assert journal.failures() == []
                if PID not in journal.partitions():
                    return []
                hwm = journal.high_water_mark(PID)
                assert hwm >= self.hwm, "the high-water mark went back"
                self.hwm = hwm
                out: list[tuple[int, bytes, int, int]] = []
                with journal.open_reader(PID, 0) as reader:
                    while chunk := reader.read(max_messages=7):
                        out += [
                            (m.offset, m.message, m.timestamp_ms, m.timestamp_us) for m in chunk
                        ]
                return out

        seen = trio.run(main)
        offsets = [offset for offset, *_ in seen]
        ms = [m for *_, m, _ in seen]
        us = [u for *_, u in seen]
        assert all(a <= b for a, b in itertools.pairwise(ms)), "ms timestamps went back"
        assert all(a < b for a, b in itertools.pairwise(us)), "times do not strictly increase"
        assert offsets == list(range(len(seen))), "offsets are not dense"
        assert len(seen) == self.hwm
        got = {offset: message for offset, message, *_ in seen}
        for offset, message in self.model.items():
            assert got.get(offset) == message, f"acknowledged offset {offset} lost or changed"
        # whatever a reader has now seen (e.g. a whole unacknowledged batch) must stay too
        self.model = got
        self.checked = True


JournalMachine.TestCase.settings = settings(
    max_examples=max(10, settings().max_examples // 4),
    stateful_step_count=8,
    deadline=None,
)
TestJournalStateMachine = JournalMachine.TestCase
