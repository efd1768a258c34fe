"""CQL names the pipeline accepts for tables and columns: plain unquoted identifiers."""

from __future__ import annotations

import re

# Lower-case letters, digits and underscores, starting with a letter (unquoted CQL names are
# case-insensitive and stored in lower case); Cassandra caps names at 48.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")


def check_name(field: str, name: str) -> None:
    """Raise ValueError (message starting with ``field``) unless ``name`` is a plain name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{field} must be a name of lower-case letters, digits and _ (at most 48, starting "
            f"with a letter), got {name!r}"
        )
