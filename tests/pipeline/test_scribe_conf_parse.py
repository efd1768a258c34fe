"""The scribe.conf reader: Scribe's syntax, and a line named for everything it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.scribe_conf import ScribeSyntaxError, parse, parse_bytes

EXAMPLE = """\
# global
port=1463   # a comment after a value
  max_msg_per_second = 2000000

<store>
category=default
type=buffer
<primary>
\ttype=network
remote_host=localhost
</primary>
<secondary>
type=file
file_path=
</secondary>
</store>
<store>
categories=a b
type=null
</store>
"""


def test_keys_blocks_comments_and_whitespace_as_scribe_reads_them() -> None:
    root = parse(EXAMPLE)
    assert {k: s.value for k, s in root.settings.items()} == {
        "port": "1463",
        "max_msg_per_second": "2000000",
    }
    assert root.settings["max_msg_per_second"].line == 3
    first, second = root.children
    assert (first.name, first.line, second.line) == ("store", 5, 17)
    primary = first.child("primary")
    assert primary is not None and primary.settings["type"].value == "network"
    secondary = first.child("secondary")
    assert secondary is not None and secondary.settings["file_path"].value == ""
    assert second.settings["categories"].value == "a b"
    assert primary.parent is first and first.parent is root


def test_a_key_set_twice_keeps_the_last_value_and_remembers_the_first() -> None:
    root = parse("port=1\nport=2\r\n")
    assert root.settings["port"].value == "2"
    assert [(s.value, s.line) for s in root.overridden] == [("1", 1)]
    assert [s.line for s in root.every_setting()] == [1, 2]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("port=1\njunk\n", 2, "neither key=value nor a <tag>"),
        ("<store\ntype=file\n", 1, "has a '<' but no '>'"),
        ("</store>\nport=1\n", 1, "closes no open block"),
        ("<store>\n<primary>\n</store>\n", 3, "closes <primary> opened on line 2"),
        ("port=1\n<store>\ntype=file\n", 2, "<store> is never closed"),
        ("<store>\n<primary>\n</primary>\n<primary>\n</primary>\n</store>\n", 4, "a second"),
        ("=5\n", 1, "no key"),
        ("<>\n", 1, "a tag needs a name"),
        ("<store> x\n</store>\n", 1, "text after the tag"),
    ],
)
def test_what_scribe_would_misread_is_refused_naming_the_line(
    text: str, line: int, problem: str
) -> None:
    with pytest.raises(ScribeSyntaxError) as caught:
        parse(text)
    assert caught.value.line == line
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"line {line}: ")


def test_bytes_that_are_not_utf8_name_their_line() -> None:
    with pytest.raises(ScribeSyntaxError) as caught:
        parse_bytes(b"port=1\n\ncategory=\xff\n")
    assert caught.value.line == 3


def test_two_top_level_stores_are_both_kept() -> None:
    root = parse("<store>\ncategory=a\n</store>\n<store>\ncategory=b\n</store>\n")
    assert [c.settings["category"].value for c in root.children] == ["a", "b"]


_LINES = st.sampled_from(
    ["<store>", "</store>", "<primary>", "</primary>", "type=file", "a=b", "# c", "", "x", "<"]
)


@given(st.lists(st.one_of(_LINES, st.text(max_size=20)), max_size=30))
def test_any_text_parses_or_is_refused_naming_one_of_its_lines(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        root = parse(text)
    except ScribeSyntaxError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1
    else:
        assert all(block.parent is root for block in root.children)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_refused_naming_a_line(data: bytes) -> None:
    try:
        parse_bytes(data)
    except ScribeSyntaxError as exc:
        assert 1 <= exc.line <= data.count(b"\n") + 1
