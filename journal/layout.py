"""Where a partition lives: the category directory encoding and path helpers.

A category is any bytes.  Its directory name is:

* bytes in ``[A-Za-z0-9_.-]`` as themselves, except a leading ``.``; every other byte as ``%XX``
  (upper-case hex).  So a name never holds ``/`` or NUL, never starts with ``.`` (never ``.``,
  ``..`` or hidden) and never holds ``~``;
* the empty category as ``%`` (every other ``%`` is followed by two hex digits);
* when that is longer than ``MAX_NAME`` characters: the first at most ``HASHED_PREFIX`` characters
  of it (whole escapes only), ``~``, and the SHA-256 of the category in hex.  Such a name cannot be
  decoded; the raw category is also kept in the directory's ``category`` file.

The mapping is injective: unhashed names decode back uniquely and contain no ``~``; hashed ones
differ by their hash.  Names are case-sensitive, like the file systems the journal supports.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from journal.format import CATEGORY_FILE
from journal.types import PartitionId

MAX_NAME = 200
HASHED_PREFIX = 128
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_HEX = "0123456789ABCDEF"


def _escaped(category: bytes) -> list[str]:
    return [
        chr(b) if b in _SAFE and not (i == 0 and b == 0x2E) else f"%{b:02X}"
        for i, b in enumerate(category)
    ]


def category_dir_name(category: bytes) -> str:
    """The directory name of ``category``: injective, filesystem-safe, bounded (see module doc)."""
    if not category:
        return "%"
    parts = _escaped(category)
    name = "".join(parts)
    if len(name) <= MAX_NAME:
        return name
    prefix: list[str] = []
    used = 0
    for part in parts:
        if used + len(part) > HASHED_PREFIX:
            break
        prefix.append(part)
        used += len(part)
    return "".join(prefix) + "~" + hashlib.sha256(category).hexdigest()


def category_from_dir_name(name: str) -> bytes:
    """The category a directory name encodes.

    Raises ValueError for names that no category encodes to, and for hashed names (read the
    directory's ``category`` file instead: ``read_category``).
    """
    if "~" in name:
        raise ValueError(f"{name!r} is a hashed category name; its category file holds the bytes")
    if name == "%":
        return b""
    out = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            digits = name[i + 1 : i + 3]
            if len(digits) != 2 or any(d not in _HEX for d in digits):
                raise ValueError(f"{name!r} is not a category directory name (bad escape)")
            out.append(int(digits, 16))
            i += 3
        elif ch.isascii():
            out.append(ord(ch))
            i += 1
        else:
            raise ValueError(f"{name!r} is not a category directory name (non-ASCII)")
    category = bytes(out)
    if category_dir_name(category) != name:
        raise ValueError(f"{name!r} is not a category directory name")
    return category


def read_category(category_dir: Path) -> bytes:
    """The raw category of a category directory: decoded from its name, or its category file."""
    try:
        return category_from_dir_name(category_dir.name)
    except ValueError:
        if "~" not in category_dir.name:
            raise
    category = (category_dir / CATEGORY_FILE).read_bytes()
    if category_dir_name(category) != category_dir.name:
        raise ValueError(f"{category_dir}: category file does not match the directory name")
    return category


def partition_dir(directory: Path, pid: PartitionId) -> Path:
    return directory / category_dir_name(pid.category) / str(pid.partition)


def parse_partition_name(name: str) -> int | None:
    """The partition number a partition directory name encodes (canonical decimal only)."""
    if name.isascii() and name.isdigit() and str(int(name)) == name:
        number = int(name)
        if number < 1 << 31:
            return number
    return None
