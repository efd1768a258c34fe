"""Scribe's counter names, per category and overall."""

from __future__ import annotations

from scribe_compat import COUNTER_NAMES, ScribeCounters


def test_names_are_scribes() -> None:
    assert COUNTER_NAMES == (
        "received good",
        "received bad",
        "received blank category",
        "denied for rate",
        "denied for queue size",
        "retries",
        "requeue",
        "lost",
        "ignored",
        "bytes lost",
        "sent",
    )


def test_increments_per_category_and_overall() -> None:
    counters = ScribeCounters()
    counters.incr(b"web", "received good", 3)
    counters.incr(b"web", "received good")
    counters.incr(b"db", "denied for rate", 2)
    counters.incr_overall("received blank category", 5)
    assert counters.snapshot() == {
        "web:received good": 4,
        "db:denied for rate": 2,
        "scribe_overall:received good": 4,
        "scribe_overall:denied for rate": 2,
        "scribe_overall:received blank category": 5,
    }
    assert counters.get("web:received good") == 4
    assert counters.get("missing") == 0


def test_raw_category_bytes_render_with_backslash_escapes() -> None:
    counters = ScribeCounters()
    counters.incr(b"caf\xc3\xa9\x00\xff", "lost")
    assert counters.snapshot()["caf\u00e9\x00\\xff:lost"] == 1
