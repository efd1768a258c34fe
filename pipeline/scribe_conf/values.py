"""Scribe's values as Scribe reads them, but strict: what Scribe would silently read as 0 or
skip is refused naming the line (``ScribeSyntaxError``)."""

from __future__ import annotations

import re

from pipeline.scribe_conf.errors import ScribeSyntaxError
from pipeline.scribe_conf.parse import Block, Setting

# strtoul with base 0, as Scribe reads numbers: decimal, 0x hexadecimal, or 0-led octal.
_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")
# Keys a store never inherits from an enclosing block.
NOT_INHERITED = frozenset({"type", "category", "categories"})


def unsigned(setting: Setting) -> int:
    text = setting.value
    if not _NUMBER.match(text):
        raise ScribeSyntaxError(
            setting.line, f"{setting.key}={text!r}: expected a non-negative whole number"
        )
    if text[:2].lower() == "0x":
        return int(text, 16)
    if len(text) > 1 and text[0] == "0":
        return int(text, 8)
    return int(text)


def yes(setting: Setting) -> bool:
    """Scribe's flags are on only when spelt exactly ``yes``."""
    return setting.value == "yes"


def lookup(block: Block, key: str, store_type: str) -> Setting | None:
    """``key`` of a store as Scribe finds it: the store's own, else ``<type>::<key>`` in the
    store, an enclosing block or the top level (the nearest wins)."""
    own = block.settings.get(key)
    if own is not None or key in NOT_INHERITED:
        return own
    inherited = f"{store_type}::{key}"
    node: Block | None = block
    while node is not None:
        found = node.settings.get(inherited)
        if found is not None:
            return found
        node = node.parent
    return None
