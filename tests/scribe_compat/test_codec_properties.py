"""Properties of the codec, on any bytes.

Invariants:
* fed any bytes, whole or one byte at a time, ``ServerConnection`` yields events and then
  ``NEED_DATA``/``CLOSED``, or raises ``ProtocolError``: never another exception, never a hang;
  both feedings give the same events;
* every event it yields can be answered (reply bytes encode);
* Log calls round-trip: any binary categories and messages (NUL, not UTF-8) and metadata, in
  each of the four wire forms, decode to what was encoded;
* the fast path never accepts what the general decoder would not, and where it accepts, both
  give the same columns.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from scribe_compat import (
    CLOSED,
    NEED_DATA,
    AppErrorType,
    Call,
    ClientConnection,
    CodecLimits,
    LogEntry,
    ProtocolError,
    RejectedCall,
    ResultCode,
    ServerConnection,
)
from scribe_compat.codec import encode_call
from scribe_compat.idl import METHODS

SMALL = CodecLimits(
    max_frame_bytes=4096,
    max_message_bytes=4096,
    max_unparsed_bytes=4100,
    max_entries_per_call=50,
    max_container_size=100,
    max_depth=6,
)


def run(chunks: list[bytes]) -> tuple[list[tuple[str, int, str]], type[BaseException] | None]:
    """Feed ``chunks`` then EOF; the events seen and the ProtocolError class raised, if any."""
    conn = ServerConnection(SMALL)
    seen: list[tuple[str, int, str]] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is CLOSED:
                    break
                if isinstance(event, Call):
                    seen.append((event.name, event.seqid, "call"))
                    value: Any = ResultCode.OK if event.name == "Log" else None
                    if event.name == "Log":
                        for entry in event.entries:
                            assert isinstance(entry.category, bytes)
                            assert isinstance(entry.message, bytes)
                        conn.reply(event, value)
                    conn.reply_exception(event, AppErrorType.INTERNAL_ERROR, "x")
                else:
                    assert isinstance(event, RejectedCall)
                    seen.append((repr(event.name), event.seqid, type(event.error).__name__))
                    conn.reply_rejected(event)
            if event is CLOSED:
                break
    except ProtocolError:
        return seen, ProtocolError
    return seen, None


def check_any_bytes(data: bytes) -> None:
    whole = run([data])
    dripped = run([data[i : i + 1] for i in range(len(data))])
    assert whole == dripped


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    check_any_bytes(data)


@given(
    st.sampled_from([b"\x80\x01\x00\x01", b"\x00\x00\x00\x03Log\x01", b"\x00\x00\x00\x40"]),
    st.binary(max_size=200),
)
def test_plausible_prefixes_then_any_bytes(prefix: bytes, data: bytes) -> None:
    check_any_bytes(prefix + data)


entry_strategy = st.builds(
    lambda c, m, md: LogEntry(category=c, message=m, metadata=md),
    st.binary(max_size=40),
    st.binary(max_size=200),
    st.none() | st.dictionaries(st.binary(max_size=10), st.binary(max_size=10), max_size=3),
)


@given(
    st.lists(entry_strategy, max_size=20),
    st.booleans(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.data(),
)
def test_mutated_valid_calls_parse_or_raise(
    entries: list[Any], framed: bool, strict: bool, seqid: int, data: st.DataObject
) -> None:
    message = bytearray(
        encode_call(
            "Log", METHODS["Log"].args(messages=entries), seqid=seqid, framed=framed, strict=strict
        )
    )
    for _ in range(data.draw(st.integers(1, 4))):
        if not message:
            break
        i = data.draw(st.integers(0, len(message) - 1))
        message[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(message)))
    check_any_bytes(bytes(message[:cut]))


@given(
    st.lists(entry_strategy, max_size=30),
    st.booleans(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(1, 64),
)
def test_log_calls_round_trip(
    entries: list[Any], framed: bool, strict: bool, seqid: int, chunk: int
) -> None:
    data = encode_call(
        "Log", METHODS["Log"].args(messages=entries), seqid=seqid, framed=framed, strict=strict
    )
    conn = ServerConnection()
    calls = []
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
        while (event := conn.next_event()) is not NEED_DATA:
            calls.append(event)
    (call,) = calls
    assert isinstance(call, Call)
    assert (call.seqid, call.strict, call.framed) == (seqid, strict, framed)
    assert [(e.category, e.message, e.metadata) for e in call.entries] == [
        (e.category, e.message, e.metadata) for e in entries
    ]
    client = ClientConnection(framed=framed, strict=strict)
    client.expect("Log", seqid)
    client.receive_data(conn.reply(call, ResultCode.TRY_LATER))
    reply = client.next_event()
    assert reply is not NEED_DATA and reply is not CLOSED
    assert reply.value == ResultCode.TRY_LATER


@given(
    st.lists(entry_strategy, max_size=12),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)
def test_the_fast_path_agrees_with_the_general_decoder(
    entries: list[Any], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(
        encode_call(
            "Log", METHODS["Log"].args(messages=entries), seqid=1, framed=True, strict=False
        )
    )
    for where, value in flips:
        data[4 + where % (len(data) - 4)] = value  # the frame length stays right
    conn = ServerConnection(SMALL)
    conn.receive_data(bytes(data))
    try:
        message = conn.next_message()
    except ProtocolError:
        return
    if message is NEED_DATA or message is CLOSED:
        return
    try:
        fast = conn.decode_common_log(message)
    except ProtocolError:
        fast = None
    if fast is None:
        return
    general = ServerConnection(SMALL).decode_general(message)
    assert isinstance(general, Call), general
    assert fast.log_batch == general.log_batch
