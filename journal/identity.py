"""The journal's identity: a random UUID kept in ``<journal-dir>/.journal-id`` (see
``journal.format``), created by the first writer to open the directory and never changed."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from journal.errors import JournalCorrupt, UnknownJournal
from journal.fileio import FileIO, write_file_atomic
from journal.format import (
    JOURNAL_ID_FILE,
    JOURNAL_ID_SIZE,
    FormatError,
    decode_journal_id,
    encode_journal_id,
)

log = logging.getLogger(__name__)


def read_journal_id(journal_dir: Path) -> uuid.UUID:
    """The identity of the journal in ``journal_dir``, from any process.

    Raises ``UnknownJournal`` when it has none (no writer has opened the journal yet) and
    ``JournalCorrupt``, naming the file, when the file is damaged.
    """
    path = Path(journal_dir) / JOURNAL_ID_FILE
    try:
        with path.open("rb") as f:
            data = f.read(JOURNAL_ID_SIZE + 1)  # one byte more shows a file that is too long
    except FileNotFoundError:
        raise UnknownJournal(path) from None
    try:
        return decode_journal_id(data)
    except FormatError as exc:
        raise JournalCorrupt(path, 0, exc.reason) from None


def ensure_journal_id(journal_dir: Path, io: FileIO) -> uuid.UUID:
    """The journal's identity, created if it has none yet.  Only the lock holder calls this."""
    try:
        return read_journal_id(journal_dir)
    except UnknownJournal as missing:
        path = missing.path
    # A damaged file raised above: it is never replaced, since rows elsewhere may carry its id.
    journal_id = uuid.uuid4()
    write_file_atomic(io, path, encode_journal_id(journal_id))
    log.info("journal identity created", extra={"file": str(path), "journal_id": str(journal_id)})
    return journal_id
