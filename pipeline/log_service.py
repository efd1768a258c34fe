"""The Scribe service: ``Log`` calls routed into the journal, and the fb303 methods.

``Log`` answers OK only once every event of the call is durable under the journal's mode; the
call is admitted or refused as a whole before anything is written.  A call that fails after
admission (the disk filled up, a writer failed) answers TRY_LATER: the client resends the whole
batch, so partitions that were written get those events again (at-least-once, never lost).

fb303 has no authentication, so what any client may do through it is bounded: ``setOption``
keeps a bounded number of bounded options, and ``shutdown`` / ``reinitialize`` obey
``server.allow_remote_shutdown``.  What is refused is counted (``fb303:...`` counters) and
logged at a bounded rate; the calls still answer as fb303 says (void, oneway).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Protocol

import trio
from annotated_types import Interval

from journal import (
    Journal,
    JournalClosed,
    JournalError,
    JournalFull,
    TooManyOpenFiles,
    WriterFailure,
)
from pipeline import __version__, logs
from pipeline.admission import Admission, Refusal
from pipeline.descriptors import DescriptorWatch
from pipeline.logs import RateLimitedLog
from pipeline.routing import AppendGroup, Plan, Router
from scribe_compat import FbStatus, LogBatch, ResultCode, ScribeCounters, ServerConfig

log = logging.getLogger(__name__)

RECEIVED_GOOD = "received good"
RECEIVED_BAD = "received bad"
RECEIVED_BLANK = "received blank category"
# Events a route did not journal because their category would be one over journal.max_categories.
OVER_CATEGORY_LIMIT = "over category limit"
OPTIONS_REFUSED = "fb303:options refused"
SHUTDOWN_REFUSED = "fb303:shutdown refused"
REINITIALIZE_REFUSED = "fb303:reinitialize refused"
# Logged option keys are cut to this many characters: a key may be megabytes long.
_LOGGED_KEY_CHARS = 80


@dataclass(frozen=True)
class Fb303Config:
    """The ``[fb303]`` table: what fb303 management calls may store in the server."""

    # setOption keeps what clients set, for getOption to read back; no option changes how
    # the server behaves, so a few dozen are plenty, and the bound keeps clients from growing
    # memory (at most max_options * max_option_bytes, 256 KiB by default).  0 keeps none.
    max_options: Annotated[int, Interval(ge=0, le=65536)] = 64
    # Key plus value, in UTF-8 bytes: room for a path or a short JSON document; at most 1 MiB.
    max_option_bytes: Annotated[int, Interval(ge=1, le=1 << 20)] = 4096


class TrafficObserver(Protocol):
    """What the Log path tells metrics (``pipeline.metrics.traffic.TrafficTally``)."""

    def refused(self, batch: LogBatch, plan: Plan, refusal: Refusal) -> None: ...

    def written(
        self, batch: LogBatch, plan: Plan, refusal: Refusal | None, seconds: float
    ) -> None: ...


def remote_shutdown_allowed(server: ServerConfig) -> bool:
    """``server.allow_remote_shutdown``, where unset means: only when bound to loopback."""
    if server.allow_remote_shutdown is not None:
        return server.allow_remote_shutdown
    if server.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(server.host).is_loopback
    except ValueError:  # a host name, or "" (every interface): assume reachable from outside
        return False


class LogService:
    """Implements ``scribe_compat.ScribeHandler`` on top of a router and a journal."""

    def __init__(
        self,
        *,
        name: str,
        journal: Journal,
        router: Router,
        admission: Admission,
        reload: Callable[[], Awaitable[None]] | None = None,
        request_stop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        fb303: Fb303Config | None = None,
        allow_remote_shutdown: bool = True,
        descriptors: DescriptorWatch | None = None,
    ) -> None:
        self.name = name
        self.journal = journal
        # Whether file descriptors run short (fb303 status); None: not watched.
        self.descriptors = descriptors
        self.router = router
        self.admission = admission
        self.counters = ScribeCounters()
        self.options: dict[str, str] = {}
        self.fb303 = fb303 or Fb303Config()
        # Whether fb303 shutdown and reinitialize are obeyed (see remote_shutdown_allowed).
        self.allow_remote_shutdown = allow_remote_shutdown
        self._refused = {OPTIONS_REFUSED: 0, SHUTDOWN_REFUSED: 0, REINITIALIZE_REFUSED: 0}
        # Other parts of the process (embedded consumers, logging) whose counters fb303
        # reports too.
        self.counter_sources: list[Callable[[], Mapping[str, int]]] = [
            logs.counters,
            self._refused.copy,
        ]
        # Other parts of the process whose problems the fb303 status reports, one line each
        # (embedded consumers held at journal damage: see ``get_status``).
        self.problem_sources: list[Callable[[], list[str]]] = []
        self._reload = reload
        self._request_stop = request_stop
        self._started_at = int(clock())
        self._ready = False
        self._warn = RateLimitedLog(log)
        # Bytes per category and the append's latency, for /metrics (None: metrics off).
        self.traffic: TrafficObserver | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def mark_ready(self) -> None:
        self._ready = True

    def begin_stopping(self) -> None:
        self.admission.stopping = True

    # -- Log ----------------------------------------------------------------------------------

    async def log(self, batch: LogBatch) -> ResultCode:
        if not batch.messages:
            # The capacity probe: only the admission checks run (a failed writer anywhere
            # counts: the server cannot promise to take whatever the client sends next).
            refusal = self.admission.check(0, 0)
            if refusal is None and self.journal.failures():
                refusal = Refusal.WRITER
            return ResultCode.OK if refusal is None else ResultCode.TRY_LATER
        plan = self.router.plan(batch)
        refusal = self.admission.check(len(batch), plan.nbytes) or self._writer_refusal(plan)
        if refusal is not None:
            self._count_refusal(plan, refusal)
            if self.traffic is not None:
                self.traffic.refused(batch, plan, refusal)
            return ResultCode.TRY_LATER
        started = time.perf_counter()
        refusal = await self._write(plan)
        if self.traffic is not None:
            self.traffic.written(batch, plan, refusal, time.perf_counter() - started)
        if refusal is not None:
            self._count_refusal(plan, refusal)
            return ResultCode.TRY_LATER
        self._count_accepted(plan)
        return ResultCode.OK

    def _writer_refusal(self, plan: Plan) -> Refusal | None:
        failures = self.journal.failures()
        if not failures:
            return None
        failed = {(f.pid.category, f.pid.partition): f for f in failures}
        for key in plan.appends:
            if (failure := failed.get(key)) is not None:
                return _failure_refusal(failure)
        return None

    async def _write(self, plan: Plan) -> Refusal | None:
        """Append every group; None when all are durable, else why one is not."""
        items = list(plan.appends.items())
        if len(items) == 1:
            return await self._append(*items[0])
        refusals: list[Refusal] = []

        async def append_one(key: tuple[bytes, int], group: AppendGroup) -> None:
            if (refusal := await self._append(key, group)) is not None:
                refusals.append(refusal)

        async with trio.open_nursery() as nursery:
            for key, group in items:
                nursery.start_soon(append_one, key, group)
        return refusals[0] if refusals else None

    async def _append(self, key: tuple[bytes, int], group: AppendGroup) -> Refusal | None:
        category, partition = key
        try:
            await self.journal.append(category, partition, group.messages, group.metadata)
        except JournalFull:
            self.admission.note_disk_full()
            self._warn.warning("journal full", "journal full: answering TRY_LATER")
            return Refusal.DISK
        except TooManyOpenFiles:
            self._warn.warning("out of descriptors", "out of file descriptors: answering TRY_LATER")
            return Refusal.DESCRIPTORS
        except JournalClosed:
            return Refusal.STOPPING
        except JournalError as exc:
            self._warn.warning(
                f"journal error {category!r}/{partition}",
                "journal append failed: answering TRY_LATER",
                category=category.decode("utf-8", "backslashreplace"),
                partition=partition,
                error=str(exc),
            )
            return Refusal.WRITER
        return None

    def _count_refusal(self, plan: Plan, refusal: Refusal) -> None:
        counters = self.counters
        for category, count in plan.good.items():
            counters.incr(category, refusal.value, count)

    def _count_accepted(self, plan: Plan) -> None:
        counters = self.counters
        for category, count in plan.good.items():
            counters.incr(category, RECEIVED_GOOD, count)
        for category, count in plan.bad.items():
            counters.incr(category, RECEIVED_BAD, count)
            self._warn.warning(
                "unroutable",
                "no route for category",
                category=category.decode("utf-8", "backslashreplace"),
                messages=count,
                policy=self.router.config.unroutable.value,
            )
        for category, count in plan.over_limit.items():
            counters.incr(category, OVER_CATEGORY_LIMIT, count)
            self._warn.warning(
                "category limit",
                "category not journaled: journal.max_categories reached",
                category=category.decode("utf-8", "backslashreplace"),
                messages=count,
                limit=self.journal.config.max_categories,
                policy=self.router.config.unroutable.value,
            )
        if plan.blank:
            counters.incr_overall(RECEIVED_BLANK, plan.blank)
            self._warn.warning(
                "blank",
                "blank category",
                messages=plan.blank,
                policy=self.router.config.unroutable.value,
            )

    # -- fb303 --------------------------------------------------------------------------------

    def get_name(self) -> str:
        return self.name

    def get_version(self) -> str:
        return __version__

    def get_status(self) -> FbStatus:
        if not self._ready:
            return FbStatus.STARTING
        if self.admission.stopping:
            return FbStatus.STOPPING
        if self.journal.failures() or self.admission.disk_problem() or self._descriptor_problem():
            return FbStatus.WARNING
        # Recovery reads only the unsynced tail (its time grows with that, not with the journal),
        # so a partition damaged further back opens as clean and its writer appends on; the first
        # to meet the damage is whoever reads it.  In this process that is the embedded consumers:
        # what they report makes the status WARNING, with partition and position in the details,
        # which is where an operator asking the server (``pipeline ctl status``) looks.  A member
        # in another process says it in its own log lines and counters (``read errors``).
        if self._reported_problems():
            return FbStatus.WARNING
        return FbStatus.ALIVE

    def get_status_details(self) -> str:
        problems = [
            f"journal partition unavailable, retrying: {f.pid}: {f.error}"
            if f.transient
            else f"journal writer failed: {f.pid}: {f.error}"
            for f in self.journal.failures()
        ]
        if disk := self.admission.disk_problem():
            problems.append(disk)
        if descriptors := self._descriptor_problem():
            problems.append(descriptors)
        problems += self._reported_problems()
        if self.admission.stopping:
            problems.append("stopping")
        return "; ".join(problems)

    def get_counters(self) -> dict[str, int]:
        counters = self.counters.snapshot()
        counters["journal:pending bytes"] = self.journal.pending_bytes
        counters["journal:failed writers"] = len(self.journal.failures())
        counters["journal:partitions"] = len(self.journal.partitions())
        counters["journal:categories"] = self.journal.category_count
        counters["journal:open partition files"] = self.journal.open_partition_files
        counters["journal:partition files reopened"] = self.journal.reopened_partitions
        for source in self.counter_sources:
            for key, value in source().items():
                counters[key] = counters.get(key, 0) + value
        return counters

    def _reported_problems(self) -> list[str]:
        return [problem for source in self.problem_sources for problem in source()]

    def _descriptor_problem(self) -> str | None:
        return None if self.descriptors is None else self.descriptors.problem()

    def get_counter(self, key: str) -> int:
        return self.get_counters().get(key, 0)

    def set_option(self, key: str, value: str) -> None:
        """Keep the option if it fits the bounds; an empty value removes it (getOption reads
        a missing option as empty anyway), which frees its slot."""
        if not value:
            self.options.pop(key, None)
            return
        size = len(key.encode()) + len(value.encode())
        if size > self.fb303.max_option_bytes:
            self._refuse_option(key, size, "fb303.max_option_bytes")
        elif key not in self.options and len(self.options) >= self.fb303.max_options:
            self._refuse_option(key, size, "fb303.max_options")
        else:
            self.options[key] = value

    def _refuse_option(self, key: str, size: int, limit: str) -> None:
        self._refused[OPTIONS_REFUSED] += 1
        self._warn.warning(
            "option refused",
            "setOption refused",
            option=key[:_LOGGED_KEY_CHARS],
            bytes=size,
            limit=limit,
            refused_total=self._refused[OPTIONS_REFUSED],
        )

    def get_option(self, key: str) -> str:
        return self.options.get(key, "")

    def get_options(self) -> dict[str, str]:
        return dict(self.options)

    def get_cpu_profile(self, seconds: int) -> str:
        # fb303 leaves profiling to the implementation; use py-spy against the pid instead.
        return ""

    def alive_since(self) -> int:
        return self._started_at

    async def reinitialize(self) -> None:
        if not self.allow_remote_shutdown:
            self._refuse_control("reinitialize", REINITIALIZE_REFUSED)
            return
        if self._reload is None:
            return
        try:
            await self._reload()
        except Exception:
            log.exception("reload failed: keeping the running configuration")

    async def shutdown(self) -> None:
        if not self.allow_remote_shutdown:
            self._refuse_control("shutdown", SHUTDOWN_REFUSED)
            return
        log.info("shutdown requested over fb303")
        if self._request_stop is not None:
            self._request_stop()

    def _refuse_control(self, method: str, counter: str) -> None:
        self._refused[counter] += 1
        self._warn.warning(
            counter,
            "fb303 call refused: server.allow_remote_shutdown is off",
            method=method,
            refused_total=self._refused[counter],
        )


def _failure_refusal(failure: WriterFailure) -> Refusal:
    """How a call touching a partition that cannot write is counted."""
    if not failure.transient:
        return Refusal.WRITER
    code = getattr(failure.error, "errno", None)
    return Refusal.DISK if code in (errno.ENOSPC, errno.EDQUOT) else Refusal.DESCRIPTORS
