"""The small parsers behind ``pipeline cat`` and friends."""

from __future__ import annotations

import click
import pytest

from pipeline.cli_tools import _lines, parse_host_port


def test_lines_split_on_newlines_only() -> None:
    assert _lines(b"a\r\nb\rc\n\nd") == [b"a\r", b"b\rc", b"", b"d"]
    assert _lines(b"one\n") == [b"one"]
    assert _lines(b"") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", ("host", 1463)),
        ("host:1464", ("host", 1464)),
        ("[::1]:1465", ("::1", 1465)),
        ("[::1]", ("::1", 1463)),
    ],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host:0", "host:x", "host:70000"])
def test_bad_port(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_host_port(text)
