"""Errors of the application layer.

    PipelineError
     ├── ConfigError        invalid configuration: names the key and the problem
     └── StartupError       a service could not start (port in use, journal refused to open, ...)

Every error that reaches the CLI is one of these (or a package's own tree, translated at the
boundary); the CLI turns them into one clear line and a distinct exit code.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class PipelineError(Exception):
    """Base of the application's errors."""


class ConfigError(PipelineError):
    """A configuration value is missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"configuration key {key!r}: {problem}")
        self.key = key
        self.problem = problem


class StartupError(PipelineError):
    """A daemon could not start; the message says which part and why."""


def find_error(exc: BaseException, cls: type[E]) -> E | None:
    """The first ``cls`` in ``exc``, looking inside the exception groups nurseries raise."""
    if isinstance(exc, cls):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := find_error(inner, cls)) is not None:
                return found
    return None
