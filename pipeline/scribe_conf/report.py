"""What became of every Scribe key: one verdict per setting, for standard error.

Each setting of the scribe.conf gets exactly one line: ``mapped to X``, ``ignored: why`` or
``unsupported: why``.  A verdict may be *fatal*: the key asks for something the pipeline cannot
honour safely (messages would go elsewhere than Scribe sent them, or nowhere), and the import
then exits 1.  Settings no store read are reported as ignored at the end, so none is silent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pipeline.scribe_conf.parse import Block, Setting


class Verdict(enum.Enum):
    MAPPED = "mapped to"
    IGNORED = "ignored:"
    UNSUPPORTED = "unsupported:"


@dataclass
class Entry:
    setting: Setting
    scope: str
    verdict: Verdict
    texts: list[str]
    fatal: bool = False

    def line(self) -> str:
        where = f"[{self.scope}] " if self.scope else ""
        return (
            f"line {self.setting.line}: {where}{self.setting.key}={self.setting.value}: "
            f"{self.verdict.value} {'; '.join(self.texts)}"
        )


@dataclass
class Report:
    entries: dict[int, Entry] = field(default_factory=dict)

    def _put(self, setting: Setting, scope: str, verdict: Verdict, text: str, fatal: bool) -> None:
        entry = self.entries.get(id(setting))
        if entry is None:
            self.entries[id(setting)] = Entry(setting, scope, verdict, [text], fatal)
            return
        # An inherited key (file::fs_type) is read by every store below it: one line, each
        # reading's outcome on it, the gravest verdict first.
        if text not in entry.texts:
            entry.texts.append(text)
        if verdict is not Verdict.MAPPED and entry.verdict is Verdict.MAPPED:
            entry.verdict = verdict
        entry.fatal = entry.fatal or fatal

    def mapped(self, setting: Setting, scope: str, target: str) -> None:
        self._put(setting, scope, Verdict.MAPPED, target, False)

    def ignored(self, setting: Setting, scope: str, why: str) -> None:
        self._put(setting, scope, Verdict.IGNORED, why, False)

    def unsupported(self, setting: Setting, scope: str, why: str, *, fatal: bool = False) -> None:
        self._put(setting, scope, Verdict.UNSUPPORTED, why, fatal)

    def note(self, setting: Setting, scope: str, text: str) -> None:
        """A remark on a key already judged (or judged later), kept on its line."""
        entry = self.entries.get(id(setting))
        if entry is None:
            self.entries[id(setting)] = Entry(setting, scope, Verdict.MAPPED, [text])
        elif text not in entry.texts:
            entry.texts.append(text)

    def seen(self, setting: Setting) -> bool:
        return id(setting) in self.entries

    @property
    def cannot_honour(self) -> bool:
        return any(e.fatal for e in self.entries.values())

    def finish(self, root: Block) -> None:
        """Every setting nobody read, and every overridden one, gets its 'ignored' line."""
        for block, scope in _walk(root, ""):
            for setting in block.overridden:
                self.ignored(setting, scope, "set again further down (the last value counts)")
            for setting in block.settings.values():
                if not self.seen(setting):
                    self.ignored(setting, scope, _unread_reason(setting, block))

    def lines(self) -> list[str]:
        ordered = sorted(self.entries.values(), key=lambda e: e.setting.line)
        return [e.line() for e in ordered]


def _unread_reason(setting: Setting, block: Block) -> str:
    if "::" in setting.key:
        kind = setting.key.split("::", 1)[0]
        return f"no {kind} store below it reads it"
    if block.parent is None:
        return "not a key Scribe's server reads"
    return "not a key Scribe reads in this store"


def _walk(block: Block, scope: str) -> list[tuple[Block, str]]:
    found = [(block, scope)]
    for index, child in enumerate(block.children):
        name = f"{child.name}{index}" if block.parent is None else child.name
        found += _walk(child, f"{scope}/{name}" if scope else name)
    return found


def scope_of(block: Block) -> str:
    """The path of ``block`` as the report names it: ``store1/primary/bucket``."""
    parts: list[str] = []
    node: Block | None = block
    while node is not None and node.parent is not None:
        parent = node.parent
        if parent.parent is None:
            index = next(i for i, c in enumerate(parent.children) if c is node)
            parts.append(f"{node.name}{index}")
        else:
            parts.append(node.name)
        node = parent
    return "/".join(reversed(parts))
