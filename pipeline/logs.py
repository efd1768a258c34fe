"""Structured log lines: ``logfmt`` (key=value) for people, JSON lines for machines.

Callers log an event name and pass fields in ``extra``::

    log.info("journal opened", extra={"dir": str(path), "partitions": 12})

Both formats carry ``ts``, ``level``, ``logger``, ``msg`` and every extra field.  Values often
hold client bytes (categories, method names, peers' garbage), so both formats escape every
character that is not printable (C0 and C1 controls, DEL, line separators, format characters):
no client can write a terminal escape sequence or a fake line into the log.

Logging is also a lever for a hostile client (one warning per bad call or garbage connection),
so ``configure`` installs a ``RepeatFilter``: of each kind of warning (its logger and format
string, which are constant per call site) the first few lines per window pass, the rest are held
back and counted, and one summary line says how many.  ``counters()`` reports the count to fb303.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# Set on a record (``extra={REPEAT_KEY: ...}``) to tell apart lines of one format string that
# deserve their own budget (say, one per category).  Underscored: never printed as a field.
REPEAT_KEY = "_repeat_key"
_SUMMARY = "_repeat_summary"
SUPPRESSED_COUNTER = "log:suppressed lines"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _to_json(value: Any) -> str:
    """JSON text with every non-ASCII or control character escaped (``ensure_ascii``)."""
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        # Keys json cannot take (bytes, tuples) or circular values: a log line must never
        # fail, so fall back to the value's text.
        return json.dumps(str(value))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        try:
            return json.dumps(fields, default=str)
        except (TypeError, ValueError):
            # As in logfmt: a value json cannot take is logged as its text.
            return json.dumps({k: v if _is_plain(v) else str(v) for k, v in fields.items()})


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


# Escapes for the quoted logfmt value, JSON's spelling so a JSON string parser reads them back.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else _to_json(value)
    # isprintable() is false for C0/C1 controls, DEL, separators and format characters.
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return '"' + "".join(_escape_char(c) for c in text) + '"'


def _escape_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char == " " or char.isprintable():
        return char
    code = ord(char)
    if code > 0xFFFF:  # JSON spells astral characters as a UTF-16 surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


FORMATTERS: dict[str, type[logging.Formatter]] = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


@dataclass
class _Window:
    started: float
    passed: int = 0
    held: int = 0


class RepeatFilter(logging.Filter):
    """Lets through the first ``burst`` warnings of each kind per ``window_s``, holding back
    (and counting) the rest; a summary line with the count follows once the window is over.

    A kind is the logger's name, the format string before its ``%`` arguments, and the
    record's ``REPEAT_KEY`` if any.  Lines below WARNING always pass: the hostile floods are
    warnings, and routine INFO lines (a partition assigned) are worth keeping whole.  Summaries
    are written before the next line that passes, by ``flush``, and at exit.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        burst: int,
        window_s: float,
        max_kinds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._emit = emit
        self._burst = burst
        self._window_s = window_s
        self._max_kinds = max_kinds
        self._clock = clock
        self._windows: dict[tuple[str, str, object], _Window] = {}
        self._next_sweep = clock() + window_s
        # Records come from worker threads too (journal I/O, drivers).
        self._lock = threading.Lock()
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        now = self._clock()
        with self._lock:
            summaries = self._sweep(now) if now >= self._next_sweep else []
            passes = record.levelno < logging.WARNING or self._admit(record, now, summaries)
        for summary in summaries:
            self._emit(summary)
        return passes

    def flush(self) -> None:
        """Write the summary of every window that held lines back, ended or not."""
        with self._lock:
            summaries = [self._summary(kind, w) for kind, w in self._windows.items() if w.held]
            self._windows.clear()
        for summary in summaries:
            self._emit(summary)

    def _admit(self, record: logging.LogRecord, now: float, out: list[logging.LogRecord]) -> bool:
        kind = self._kind(record)
        window = self._windows.get(kind)
        if window is None or now - window.started >= self._window_s:
            if window is not None and window.held:
                out.append(self._summary(kind, window))
            window = self._windows[kind] = _Window(now)
        if window.passed < self._burst:
            window.passed += 1
            return True
        window.held += 1
        self.suppressed += 1
        return False

    def _kind(self, record: logging.LogRecord) -> tuple[str, str, object]:
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        kind = (record.name, template, getattr(record, REPEAT_KEY, None))
        if kind not in self._windows and len(self._windows) >= self._max_kinds:
            # Kinds keyed by client data are many: past the bound they share their call
            # site's budget, so memory stays bounded and so does the output.
            kind = (record.name, template, None)
        return kind

    def _sweep(self, now: float) -> list[logging.LogRecord]:
        """Summaries of windows that are over, so a flood that stopped is still reported."""
        self._next_sweep = now + self._window_s
        over = [k for k, w in self._windows.items() if now - w.started >= self._window_s]
        windows = [(kind, self._windows.pop(kind)) for kind in over]
        return [self._summary(kind, w) for kind, w in windows if w.held]

    def _summary(self, kind: tuple[str, str, object], window: _Window) -> logging.LogRecord:
        name, template, _ = kind
        return logging.makeLogRecord(
            {
                "name": name,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "repeated log lines held back",
                "suppressed": window.held,
                "of": template,
                "window_s": self._window_s,
                "suppressed_total": self.suppressed,
                _SUMMARY: True,
            }
        )


class _Installed:
    """What ``configure`` installed, for ``counters``; one per process."""

    repeat_filter: RepeatFilter | None = None


def configure(
    level: str = "info",
    fmt: str = "logfmt",
    *,
    repeat_burst: int = 5,
    repeat_window_s: float = 10.0,
    max_repeat_kinds: int = 1024,
) -> None:
    """Send the process's logs to stderr in the chosen format, repeated warnings limited."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    if _Installed.repeat_filter is not None:
        _Installed.repeat_filter.flush()
    repeat_filter = RepeatFilter(
        handler.handle, burst=repeat_burst, window_s=repeat_window_s, max_kinds=max_repeat_kinds
    )
    handler.addFilter(repeat_filter)
    atexit.register(repeat_filter.flush)
    _Installed.repeat_filter = repeat_filter
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The drivers are chatty at INFO about routine reconnects; our adapters log what matters.
    for noisy in ("kazoo.client", "cassandra"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def counters() -> dict[str, int]:
    """What fb303 getCounters reports about logging: the lines held back so far."""
    installed = _Installed.repeat_filter
    held = installed.suppressed if installed is not None else 0
    return {SUPPRESSED_COUNTER: held}


class RateLimitedLog:
    """Warnings whose ``key`` gets its own repeat budget (see ``RepeatFilter``).

    ``key`` tells apart lines of one kind that deserve separate budgets, for instance one per
    category; the limiting itself is the filter's, so there is one mechanism for the process.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def warning(self, key: str, msg: str, **fields: Any) -> None:
        self._logger.warning(msg, extra={**fields, REPEAT_KEY: key})
