"""Errors of the application layer.

    PipelineError
     ├── ConfigError        invalid configuration: the key (``server.port``), the problem, and
     │    │                 where the value came from when not from the file (``source``: an
     │    │                 environment variable, the command line)
     │    └── ConfigFileError  the configuration file itself cannot be read or is not TOML
     └── StartupError       a service could not start: what (``subject``) and why (``reason``)

Every error that reaches the CLI is one of these (or a package's own tree, translated at the
boundary); the CLI turns them into one clear line and a distinct exit code.

How messages compose: an error's text begins with what it is about (a key, a file, a peer, a
partition), so that it reads on its own in a log line.  A wrapper that names the same thing
again would say it twice (``journal var/journal: var/journal: in use``), so every wrapper
builds its text with ``describe(subject, cause)``, which says the subject once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class PipelineError(Exception):
    """Base of the application's errors."""


class ConfigError(PipelineError):
    """A configuration value is missing, of the wrong type or out of range.

    ``source`` says where the value came from when that was not the configuration file
    ("environment variable PIPELINE_SERVER__PORT", "the command line"): a key a user cannot
    find in the file must say where else to look.
    """

    def __init__(self, key: str, problem: str, source: str | None = None) -> None:
        super().__init__(key, problem, source)
        self.key = key
        self.problem = problem
        self.source = source

    def __str__(self) -> str:
        origin = f" (from {self.source})" if self.source else ""
        return f"configuration key {self.key!r}{origin}: {self.problem}"


class ConfigFileError(ConfigError):
    """The configuration file ``path`` cannot be read, or is not TOML (no key to blame)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__("", problem)
        self.args = (path, problem)
        self.path = path

    def __str__(self) -> str:
        return f"configuration file {str(self.path)!r}: {self.problem}"


class StartupError(PipelineError):
    """A daemon could not start: ``subject`` names the part ("journal /var/lib/journal",
    "127.0.0.1:1463"), ``reason`` says why; a cause's own mention of the subject is dropped."""

    def __init__(self, reason: str | BaseException, subject: str = "") -> None:
        self.subject = subject
        self.reason = reason_of(reason, subject)
        super().__init__(f"{subject}: {self.reason}" if subject else self.reason)


def describe(subject: str, cause: BaseException | str) -> str:
    """``subject: reason``, the subject said once although ``cause`` may name it too."""
    return f"{subject}: {reason_of(cause, subject)}"


def reason_of(cause: BaseException | str, subject: str) -> str:
    """What ``cause`` says beyond ``subject``.

    Errors of every package begin with their subject (``127.0.0.1:1499: connect failed``,
    ``/j/var: in use``), and a subject may be longer than theirs (``journal /j/var``), so a
    leading "S: " is dropped when S is the subject or its last words.  An OSError names its
    file at the end instead: its reason is its strerror, plus the file when that is another.
    """
    if isinstance(cause, OSError) and cause.strerror:
        filename = cause.filename
        if filename is None or os.fsdecode(filename) in subject:
            return cause.strerror
        return f"{cause.strerror}: {os.fsdecode(filename)}"
    text = str(cause)
    words = subject.split(" ")
    for first in range(len(words)):
        tail = " ".join(words[first:])
        if tail and text.startswith(tail + ": "):
            return text[len(tail) + 2 :]
    return text


def find_error(exc: BaseException, cls: type[E]) -> E | None:
    """The first ``cls`` in ``exc``, looking inside the exception groups nurseries raise."""
    if isinstance(exc, cls):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := find_error(inner, cls)) is not None:
                return found
    return None
