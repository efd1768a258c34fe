"""Frames of ASSEMBLE_LATER_BYTES or more: kept as their reads, joined by whoever decodes them."""

from __future__ import annotations

import pytest

from scribe_compat import (
    CLOSED,
    NEED_DATA,
    Call,
    LogEntry,
    MalformedMessage,
    ServerConnection,
)
from scribe_compat.codec import ASSEMBLE_LATER_BYTES, LargeFrame, encode_call
from scribe_compat.idl import METHODS


def log_request(count: int, message_bytes: int, seqid: int = 1) -> tuple[bytes, list[LogEntry]]:
    entries = [
        LogEntry(category=b"c", message=bytes([i % 251]) * message_bytes) for i in range(count)
    ]
    args = METHODS["Log"].args(messages=entries)
    return encode_call("Log", args, seqid=seqid, framed=True, strict=False), entries


LARGE, LARGE_ENTRIES = log_request(40, ASSEMBLE_LATER_BYTES // 32)
SMALL, SMALL_ENTRIES = log_request(2, 10, seqid=2)


def feed_in_reads(conn: ServerConnection, data: bytes, read: int) -> list[object]:
    """Feed ``data`` ``read`` bytes at a time; everything next_message gives on the way."""
    out: list[object] = []
    for start in range(0, len(data), read):
        conn.receive_data(data[start : start + read])
        while (message := conn.next_message()) is not NEED_DATA:
            out.append(message)
    return out


@pytest.mark.parametrize("read", [1000, 65536, 262144, 3 * ASSEMBLE_LATER_BYTES])
def test_a_large_frame_comes_out_whole_and_what_follows_it_stays(read: int) -> None:
    assert len(LARGE) - 4 >= ASSEMBLE_LATER_BYTES
    conn = ServerConnection()
    large, small = feed_in_reads(conn, LARGE + SMALL, read)
    # Given in one read, the frame is complete at once and needs no joining.
    assert isinstance(large, LargeFrame) == (read < len(LARGE))
    assert large.size == len(LARGE) - 4  # type: ignore[attr-defined]
    first = conn.decode(large)  # type: ignore[arg-type]
    second = conn.decode(small)  # type: ignore[arg-type]
    assert isinstance(first, Call) and first.entries == LARGE_ENTRIES
    assert isinstance(second, Call) and second.entries == SMALL_ENTRIES
    assert (first.seqid, second.seqid) == (1, 2)
    assert conn.buffered == 0


def test_the_reads_of_a_large_frame_count_as_buffered_until_it_is_complete() -> None:
    conn = ServerConnection()
    conn.receive_data(LARGE[:1000])
    assert conn.next_message() is NEED_DATA
    assert conn.incoming_message_bytes == len(LARGE)
    conn.receive_data(LARGE[1000:-1])
    assert conn.next_message() is NEED_DATA
    assert conn.buffered == len(LARGE) - 1
    assert conn.incoming_message_bytes == len(LARGE)
    conn.receive_data(LARGE[-1:] + SMALL[:3])
    frame = conn.next_message()
    assert isinstance(frame, LargeFrame)
    assert conn.buffered == 3
    assert conn.next_message() is NEED_DATA
    conn.receive_data(SMALL[3:])
    small = conn.next_message()
    assert small is not NEED_DATA and small is not CLOSED and not isinstance(small, LargeFrame)
    assert small.size == len(SMALL) - 4


def test_assemble_gives_the_message_a_small_frame_would() -> None:
    conn = ServerConnection()
    (frame,) = feed_in_reads(conn, LARGE, 262144)
    assert isinstance(frame, LargeFrame)
    message = conn.assemble(frame)
    assert message.payload == LARGE[4:]
    assert message.header.name == b"Log" and message.framed


def test_a_large_frame_with_a_bad_header_breaks_the_connection_when_assembled() -> None:
    size = ASSEMBLE_LATER_BYTES
    name_too_long = (1000).to_bytes(4, "big")
    conn = ServerConnection()
    (frame,) = feed_in_reads(conn, size.to_bytes(4, "big") + name_too_long + bytes(size - 4), 4096)
    assert isinstance(frame, LargeFrame)
    with pytest.raises(MalformedMessage, match="method name length 1000"):
        conn.decode(frame)
    with pytest.raises(MalformedMessage):
        conn.next_message()


def test_a_peer_closing_inside_a_large_frame_is_an_error() -> None:
    conn = ServerConnection()
    conn.receive_data(LARGE[:-10])
    assert conn.next_message() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(MalformedMessage):
        conn.next_message()
