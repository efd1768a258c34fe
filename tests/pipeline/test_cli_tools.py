"""The small parsers behind ``pipeline cat`` and friends."""

from __future__ import annotations

import re

import click
import pytest

from pipeline.cli.common import ADDRESS, CASSANDRA_ADDRESS, parse_host_port
from pipeline.cli.tools import _lines


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


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("host:0", "invalid port"),
        ("host:x", "invalid port"),
        ("host:70000", "invalid port"),
        ("host:", "empty port"),
        ("[::1]:", "empty port"),
        (":1463", "no host"),
        ("[::1", "expected [v6-address]:port"),
        ("[::1]1463", "expected [v6-address]:port"),
    ],
)
def test_bad_address(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_host_port(text)
    with pytest.raises(click.BadParameter, match=re.escape(problem)):
        ADDRESS.convert(text, None, None)


def test_the_default_port_is_the_address_type_s() -> None:
    assert CASSANDRA_ADDRESS.convert("db", None, None) == ("db", 9042)
    assert ADDRESS.convert("[::1]", None, None) == ("::1", 1463)
