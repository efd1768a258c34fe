"""Log lines: client bytes cannot escape into the terminal, and repeated warnings are bounded."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import logs
from pipeline.logs import REPEAT_KEY, JsonFormatter, LogfmtFormatter, RepeatFilter

# Every control character a terminal may act on, line and paragraph separators, and the
# bidirectional overrides that reorder what a reader sees.
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
INVISIBLE = ["\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\udc80", "\U000e0001"]
HOSTILE = "cat\x1b]0;pwned\x07\x1b[2J\x00end"
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ ]*)')


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "t", "levelno": logging.WARNING, "levelname": "WARNING"})
    rec.msg, rec.args = msg, args or None
    rec.__dict__.update(extra)
    return rec


def parse_logfmt(line: str) -> dict[str, str]:
    """The fields of a logfmt line; quoted values read back with JSON's string rules."""
    fields = {}
    for key, value in PAIR.findall(line):
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


def assert_inert(line: str) -> None:
    """One line of printable characters: nothing a terminal would act on."""
    assert "\n" not in line
    assert line.isprintable(), [c for c in line if not c.isprintable()]


@pytest.mark.parametrize("char", CONTROLS + INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_logfmt_escapes_every_control_character(char: str) -> None:
    value = f"a{char}b"
    line = LogfmtFormatter().format(record("call %s", value, category=value))
    assert_inert(line)
    fields = parse_logfmt(line)
    assert fields["category"] == value
    assert fields["msg"] == f"call {value}"


@pytest.mark.parametrize("char", CONTROLS + INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_json_escapes_every_control_character(char: str) -> None:
    value = f"a{char}b"
    line = JsonFormatter().format(record("call %s", value, category=value))
    assert_inert(line)
    fields = json.loads(line)
    assert fields["category"] == value
    assert fields["msg"] == f"call {value}"


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_message_text_formatted_by_the_caller_is_escaped(formatter: logging.Formatter) -> None:
    # The Scribe server formats its own key=value text into the message.
    line = formatter.format(record(f"call rejected peer=127.0.0.1:1 method={HOSTILE}"))
    assert_inert(line)
    assert "\x1b" not in line and "\x07" not in line and "\x00" not in line


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_exceptions_and_values_of_any_type_are_escaped(formatter: logging.Formatter) -> None:
    class Odd:
        def __str__(self) -> str:
            return HOSTILE

    try:
        raise ValueError(HOSTILE)
    except ValueError:
        rec = record("failed", raw=HOSTILE.encode(), odd=Odd(), keyed={b"\x1b": HOSTILE})
        rec.exc_info = sys.exc_info()
    line = formatter.format(rec)
    assert_inert(line)
    assert "ValueError" in line


@given(st.text(), st.text())
def test_any_text_gives_one_inert_line_that_reads_back(msg: str, value: str) -> None:
    logfmt = LogfmtFormatter().format(record("%s", msg, field=value))
    assert_inert(logfmt)
    assert parse_logfmt(logfmt)["field"] == value
    assert parse_logfmt(logfmt)["msg"] == msg
    as_json = JsonFormatter().format(record("%s", msg, field=value))
    assert_inert(as_json)
    assert json.loads(as_json)["field"] == value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_filter(
    burst: int = 5, window_s: float = 10.0, max_kinds: int = 100
) -> tuple[RepeatFilter, list[logging.LogRecord], Clock]:
    emitted: list[logging.LogRecord] = []
    clock = Clock()
    repeat = RepeatFilter(
        emitted.append, burst=burst, window_s=window_s, max_kinds=max_kinds, clock=clock
    )
    return repeat, emitted, clock


def warning(msg: str = "call rejected %s", *args: object, **extra: object) -> logging.LogRecord:
    return record(msg, *(args or ("peer=x",)), **extra)


def test_the_first_lines_of_a_kind_pass_then_a_summary_gives_the_count() -> None:
    repeat, emitted, clock = make_filter(burst=5)
    passed = sum(repeat.filter(warning("call rejected %s", f"peer={i}")) for i in range(2000))
    assert passed == 5
    assert repeat.suppressed == 1995
    assert emitted == []
    clock.now += 10
    assert repeat.filter(warning())  # a new window: the line passes, after the summary
    [summary] = emitted
    assert summary.getMessage() == "repeated log lines held back"
    assert summary.__dict__["suppressed"] == 1995
    assert summary.__dict__["of"] == "call rejected %s"
    assert summary.levelno == logging.WARNING
    assert repeat.filter(summary)  # a summary is never held back itself


def test_a_flood_that_stopped_is_summed_up_by_the_next_line_of_any_kind() -> None:
    repeat, emitted, clock = make_filter(burst=1)
    for _ in range(10):
        repeat.filter(warning("protocol error: closing connection %s"))
    clock.now += 11
    info = record("server status")
    info.levelno = logging.INFO
    assert repeat.filter(info)
    assert [r.__dict__["suppressed"] for r in emitted] == [9]


def test_kinds_have_their_own_budgets_and_info_lines_always_pass() -> None:
    repeat, _, _ = make_filter(burst=2)
    assert [repeat.filter(warning("a %s")) for _ in range(3)] == [True, True, False]
    assert [repeat.filter(warning("b %s")) for _ in range(3)] == [True, True, False]
    other_logger = warning("a %s")
    other_logger.name = "other"
    assert repeat.filter(other_logger)
    for _ in range(100):
        info = record("partition assigned")
        info.levelno = logging.INFO
        assert repeat.filter(info)
    assert repeat.suppressed == 2


def test_repeat_keys_split_a_kind_but_stay_bounded() -> None:
    repeat, _, _ = make_filter(burst=1, max_kinds=10)
    passed = [repeat.filter(warning("journal error", **{REPEAT_KEY: f"c{i}"})) for i in range(100)]
    # Ten keyed kinds get their own budget; the rest share the call site's one.
    assert sum(passed) == 11
    assert repeat.suppressed == 89


def test_flush_sums_up_windows_still_open() -> None:
    repeat, emitted, _ = make_filter(burst=1)
    for _ in range(4):
        repeat.filter(warning())
    repeat.flush()
    assert [r.__dict__["suppressed"] for r in emitted] == [3]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, installed = root.handlers[:], root.level, logs._Installed.repeat_filter
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._Installed.repeat_filter = installed


def test_configure_installs_the_filter_and_counts_for_fb303(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("info", "logfmt", repeat_burst=3, repeat_window_s=60.0, max_repeat_kinds=10)
    log = logging.getLogger("scribe_compat.server")
    for i in range(50):
        log.warning("call rejected %s", f"method=\x1b[{i}m")
    assert logs.counters() == {logs.SUPPRESSED_COUNTER: 47}
    installed = logs._Installed.repeat_filter
    assert installed is not None
    installed.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert all("\x1b" not in line for line in lines)
    assert parse_logfmt(lines[-1])["suppressed"] == "47"
