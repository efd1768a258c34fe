"""A sans-IO reader of Scribe's configuration language (scribe.conf): text in, a tree out.

The language, as Scribe's own reader takes it, line by line:

* spaces and tabs around a line are insignificant; ``#`` starts a comment anywhere on a line
  (so no value can contain one); blank lines are skipped;
* ``key=value`` sets a key of the block the line is in (split at the first ``=``, both sides
  trimmed; the value may be empty); at the top level the keys are the server's;
* ``<name>`` opens a nested block (a store: ``<store>`` at the top level, ``<primary>``,
  ``<secondary>``, ``<bucket>``, ``<bucket0>``..., ``<store0>``... inside), ``</name>`` closes it.

Where Scribe logs a complaint and reads on, this reader refuses with the line, because what
Scribe then does is rarely what the file meant: a line that is neither a key nor a tag (Scribe
skips it), a ``<`` without ``>`` (Scribe skips the block's opening, so its keys land in the
parent), a closing tag at the top level (Scribe stops reading the file there), a closing tag
naming another block, a file ending inside a block, and bytes that are not UTF-8.  A trailing
carriage return (a file edited on Windows) is removed, where Scribe would keep it in the value.

A key set twice in one block keeps its last value, as in Scribe; the earlier settings are kept
in ``Block.overridden`` so that the importer can say they were ignored.  Two nested blocks of
one name (other than ``store``, which Scribe numbers) are refused: Scribe keeps only the last.

Contract: ``parse`` returns a ``Block`` or raises ``ScribeSyntaxError`` naming a line, for any
text; anything else coming out of it is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.scribe_conf.errors import ScribeSyntaxError

ROOT = "(top level)"


@dataclass(frozen=True)
class Setting:
    """``key=value`` on line ``line``."""

    key: str
    value: str
    line: int


@dataclass
class Block:
    """The top level, or one ``<name>`` block opened on ``line``."""

    name: str
    line: int
    settings: dict[str, Setting] = field(default_factory=dict)
    children: list[Block] = field(default_factory=list)
    # Earlier settings of a key set again later in the same block (the last one counts).
    overridden: list[Setting] = field(default_factory=list)
    parent: Block | None = field(default=None, repr=False, compare=False)

    def child(self, name: str) -> Block | None:
        for block in self.children:
            if block.name == name:
                return block
        return None

    def every_setting(self) -> list[Setting]:
        """This block's settings, overridden ones included, in line order."""
        return sorted([*self.settings.values(), *self.overridden], key=lambda s: s.line)


def parse_bytes(data: bytes) -> Block:
    """``parse`` of a file's bytes, which must be UTF-8 (the error names the first bad line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScribeSyntaxError(line, "not UTF-8 text") from None
    return parse(text)


def parse(text: str) -> Block:
    """The tree of ``text``, a whole scribe.conf."""
    root = Block(ROOT, 0)
    current = root
    # str.splitlines would also split at form feeds and other separators Scribe reads through.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = _meaningful(raw)
        if not line:
            continue
        if line.startswith("</"):
            current = _close(current, line, number)
        elif line.startswith("<"):
            current = _open(current, line, number)
        else:
            _set(current, line, number)
    if current is not root:
        raise ScribeSyntaxError(current.line, f"<{current.name}> is never closed")
    return root


def _meaningful(raw: str) -> str:
    line = raw.removesuffix("\r").strip(" \t")
    comment = line.find("#")
    if comment != -1:
        line = line[:comment]
    return line.strip(" \t")


def _open(current: Block, line: str, number: int) -> Block:
    end = line.find(">")
    if end == -1:
        raise ScribeSyntaxError(number, f"{line!r} has a '<' but no '>'")
    name = line[1:end].strip(" \t")
    _check_tag(line, end, name, number)
    if name != "store" and current.child(name) is not None:
        raise ScribeSyntaxError(
            number, f"a second <{name}> in one block (Scribe would keep only the last)"
        )
    block = Block(name, number, parent=current)
    current.children.append(block)
    return block


def _close(current: Block, line: str, number: int) -> Block:
    end = line.find(">")
    if end == -1:
        raise ScribeSyntaxError(number, f"{line!r} has a '<' but no '>'")
    name = line[2:end].strip(" \t")
    _check_tag(line, end, name, number)
    if current.parent is None:
        raise ScribeSyntaxError(
            number, f"</{name}> closes no open block (Scribe would stop reading here)"
        )
    if name != current.name:
        raise ScribeSyntaxError(
            number, f"</{name}> closes <{current.name}> opened on line {current.line}"
        )
    return current.parent


def _check_tag(line: str, end: int, name: str, number: int) -> None:
    if not name:
        raise ScribeSyntaxError(number, f"{line!r}: a tag needs a name")
    if any(c in name for c in "<>= \t"):
        raise ScribeSyntaxError(number, f"{line!r}: {name!r} is not a block name")
    if line[end + 1 :].strip(" \t"):
        raise ScribeSyntaxError(number, f"{line!r}: text after the tag")


def _set(current: Block, line: str, number: int) -> None:
    key, eq, value = line.partition("=")
    key = key.strip(" \t")
    if not eq:
        raise ScribeSyntaxError(number, f"{line!r} is neither key=value nor a <tag>")
    if not key:
        raise ScribeSyntaxError(number, f"{line!r} has no key before '='")
    earlier = current.settings.get(key)
    if earlier is not None:
        current.overridden.append(earlier)
    current.settings[key] = Setting(key, value.strip(" \t"), number)
