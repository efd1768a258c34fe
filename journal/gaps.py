"""A partition's documented gaps: offsets ``repair`` cut, which will never hold data.

The file (``gaps``, format in ``journal.format``) is written only by ``repair``, with the journal
locked, and read by readers and ``verify`` when they meet a gap between segments: a gap it
covers is expected, one it does not cover is reported as before.
"""

from __future__ import annotations

from pathlib import Path

from journal.fileio import FileIO, write_file_atomic
from journal.format import GAPS_FILE, Gap, decode_gaps


def gaps_path(part: Path) -> Path:
    return part / GAPS_FILE


def read_gaps(part: Path) -> tuple[list[Gap], bool]:
    """The partition's documented gaps, and whether the file is damaged (its valid prefix is
    returned; no file is no gaps)."""
    try:
        data = gaps_path(part).read_bytes()
    except FileNotFoundError:
        return [], False
    return decode_gaps(data)


def add_gap(io: FileIO, part: Path, gap: Gap) -> None:
    """Document ``gap`` durably (atomic rewrite).

    A gap that starts at or below known ones replaces them: a later repair that cuts further
    back moves what followed them aside too (and salvages it again).  Entries of a damaged file
    past its valid prefix are dropped, as readers ignore them anyway.
    """
    gaps, _damaged = read_gaps(part)
    kept = [g for g in gaps if g.start < gap.start]
    if kept and kept[-1].end > gap.start:
        # Repair cuts where data ends, and no data ends inside a gap.
        raise ValueError(f"gap {gap.start}..{gap.end} starts inside {kept[-1].start}..")
    write_file_atomic(io, gaps_path(part), b"".join(g.encode() for g in [*kept, gap]))


def documented(gaps: list[Gap], start: int, end: int) -> list[Gap] | None:
    """The documented gaps that together cover offsets ``start .. end - 1`` (None: some offset
    of the range is in none of them)."""
    covering: list[Gap] = []
    at = start
    for gap in gaps:
        if gap.end <= at:
            continue
        if gap.start > at:
            return None
        covering.append(gap)
        at = gap.end
        if at >= end:
            return covering
    return None
