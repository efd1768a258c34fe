"""Reloading the configuration: fb303 ``reinitialize`` (``pipeline ctl reload``) and SIGHUP.

A reload reads the configuration file again (with the environment of the start) and applies
what can change while the server runs: routes, admission, the server's limits for connections
accepted from then on.  What needs a restart (addresses, the journal, consumer groups) keeps its
running value.

A file that does not load changes nothing.  The problem is logged once, naming the key and the
problem (no traceback: the file is wrong, not the code), and reported by fb303 until a reload
succeeds: ``getStatus`` WARNING, ``getStatusDetails`` ``reload failed: <error>``, because a
restart would fail on the same file.

fb303 ``reinitialize`` is oneway: its caller hears nothing back.  So every attempt counts
``config:reloads`` once it has run, and a failed one ``config:reload failures`` too;
``pipeline ctl reload`` reads both before and after its call to learn that its reload ran and how
it went (a reload started meanwhile by a SIGHUP can blur which attempt it reads, never whether
the last one failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pipeline.errors import ConfigError, ConfigFileError
from pipeline.notify import Notifier

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

RELOADS = "config:reloads"
RELOAD_FAILURES = "config:reload failures"
# getStatusDetails' entry for a failed reload begins with this.
FAILED_PREFIX = "reload failed: "


class Reloader:
    """Runs reloads one at a time; ``load`` reads the file, ``apply`` puts its values in place."""

    def __init__(
        self,
        source: Path | None,
        load: Callable[[Path], PipelineConfig],
        apply: Callable[[PipelineConfig], None],
        notifier: Notifier | None = None,
    ) -> None:
        self.source = source
        self._load = load
        self._apply = apply
        # systemd hears RELOADING=1 before an attempt and READY=1 after it (``pipeline.notify``).
        self._notifier = Notifier(None) if notifier is None else notifier
        # A SIGHUP and a reinitialize may arrive together: the second waits, then reads the
        # file again, so the last file written is the one in force.
        self._lock = trio.Lock()
        self._attempts = 0
        self._failures = 0
        self._problem: str | None = None

    async def reload(self, trigger: str) -> None:
        """Reload now; never raises for a configuration that does not load."""
        async with self._lock:
            self._notifier.reloading()
            try:
                await self._reload(trigger)
            finally:
                self._attempts += 1
                self._notifier.reloaded()

    async def _reload(self, trigger: str) -> None:
        source = self.source
        if source is None:
            log.info(
                "reload requested, but the server was started without a configuration file: "
                "nothing to reload",
                extra={"trigger": trigger},
            )
            return
        try:
            # In a thread: loading may import a materializer plugin to check its options.
            new = await trio.to_thread.run_sync(self._load, source)
            self._apply(new)
        except ConfigError as exc:
            self._failed(exc, trigger)
        except Exception as exc:
            # Not the file's fault: a bug, and its traceback belongs in the log.
            log.exception(
                "reload failed: the running configuration stays", extra={"trigger": trigger}
            )
            self._failures += 1
            self._problem = f"{FAILED_PREFIX}{type(exc).__name__}: {exc}"
        else:
            self._problem = None
            log.info("configuration reloaded", extra={"trigger": trigger, "file": str(source)})

    def _failed(self, exc: ConfigError, trigger: str) -> None:
        self._failures += 1
        self._problem = f"{FAILED_PREFIX}{exc}"
        fields: dict[str, str] = {"trigger": trigger, "file": str(self.source)}
        if isinstance(exc, ConfigFileError):
            fields["file"] = str(exc.path)
        else:
            fields["key"] = exc.key
            if exc.source is not None:
                fields["from"] = exc.source
        fields["problem"] = exc.problem
        log.error("reload failed: the running configuration stays", extra=fields)

    def problems(self) -> list[str]:
        """For fb303 status: why the last reload failed, until one succeeds."""
        return [] if self._problem is None else [self._problem]

    def counters(self) -> dict[str, int]:
        return {RELOADS: self._attempts, RELOAD_FAILURES: self._failures}
