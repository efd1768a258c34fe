"""The fetch codec, without sockets.

Invariants:
* every call and every reply round-trips: what the client encodes the server decodes to the
  same typed request, and what the server answers the client decodes to the same value (or
  the same ``FetchRefused``);
* fed any bytes, whole or one byte at a time, either side yields events and then
  ``NEED_DATA``/``CLOSED``, or raises ``ProtocolError`` (the client also ``FetchRefused`` /
  ``RemoteApplicationError`` for replies that carry them): never another exception, never a
  hang; both feedings agree;
* negative values and wrong-typed arguments are refused calls, and the connection goes on;
* a fetch reply goes out exactly as thriftpy2 encodes it, its records being the very buffer the
  handler gave (not a copy); the client takes them as a read-only view of the reply (a large
  one received into its own buffer, however it is cut), and decodes a reply laid out otherwise
  as thriftpy2 reads it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scribe_compat import (
    CLOSED,
    NEED_DATA,
    AppErrorType,
    BadArguments,
    Describe,
    FetchCall,
    FetchClientConnection,
    FetchErrorCode,
    FetchRefused,
    FetchRequest,
    FetchResult,
    FetchServerConnection,
    JournalDescription,
    PartitionState,
    ProtocolError,
    RejectedFetchCall,
    RemoteApplicationError,
    TimeLookup,
    UnknownMethod,
)
from scribe_compat.codec import encode_message
from scribe_compat.idl import FETCH_METHODS, MessageType, fetch_thrift

offsets = st.integers(0, 2**63 - 1)
i32 = st.integers(0, 2**31 - 1)
requests = st.one_of(
    st.just(Describe()),
    st.builds(FetchRequest, st.binary(max_size=40), i32, offsets, i32, i32, i32),
    st.builds(TimeLookup, st.binary(max_size=40), i32, st.integers(-(2**63), 2**63 - 1)),
)
states = st.builds(PartitionState, st.binary(max_size=20), i32, offsets, offsets, st.booleans())
results = st.builds(FetchResult, st.binary(max_size=300), offsets, offsets, offsets)
descriptions = st.builds(
    JournalDescription, st.text(max_size=40), st.lists(states, max_size=5).map(tuple)
)


def server_events(data: bytes) -> list[FetchCall | RejectedFetchCall]:
    server = FetchServerConnection()
    server.receive_data(data)
    events = []
    while (event := server.next_event()) is not NEED_DATA and event is not CLOSED:
        events.append(event)
    return events


def answer(client: FetchClientConnection, data: bytes) -> Any:
    client.receive_data(data)
    return client.next_event()


@given(requests)
def test_every_request_round_trips(request: Any) -> None:
    client = FetchClientConnection()
    (call,) = server_events(client.call(request))
    assert isinstance(call, FetchCall)
    assert call.request == request


@given(st.one_of(results, descriptions, offsets), st.data())
def test_every_reply_round_trips(value: Any, data: st.DataObject) -> None:
    if isinstance(value, FetchResult):
        request: Any = FetchRequest(b"c", 0, 0, 10, 10, 0)
    elif isinstance(value, JournalDescription):
        request = Describe()
    else:
        request = TimeLookup(b"c", 0, data.draw(st.integers(0, 10**15)))
    client = FetchClientConnection()
    server = FetchServerConnection()
    server.receive_data(client.call(request))
    call = server.next_event()
    assert isinstance(call, FetchCall)
    assert answer(client, server.reply(call, value)) == value


@given(
    st.sampled_from(list(FetchErrorCode)),
    st.text(max_size=50),
    offsets,
    offsets,
    st.text(max_size=30),
    offsets,
)
def test_refusals_round_trip(
    code: FetchErrorCode, reason: str, earliest: int, hwm: int, file: str, position: int
) -> None:
    client = FetchClientConnection()
    server = FetchServerConnection()
    server.receive_data(client.call(FetchRequest(b"c", 1, 5, 10, 10, 0)))
    call = server.next_event()
    assert isinstance(call, FetchCall)
    refused = FetchRefused(
        int(code), reason, earliest=earliest, high_water_mark=hwm, file=file, position=position
    )
    with pytest.raises(FetchRefused) as caught:
        answer(client, server.reply_refused(call, refused))
    got = caught.value
    assert (got.code, got.reason, got.earliest, got.high_water_mark, got.file, got.position) == (
        code,
        reason,
        earliest,
        hwm,
        file,
        position,
    )
    # The connection goes on after a refusal.
    server.receive_data(client.call(Describe()))
    call = server.next_event()
    assert isinstance(call, FetchCall)
    assert answer(client, server.reply(call, JournalDescription("j", ()))) == JournalDescription(
        "j", ()
    )


def raw_call(name: str, seqid: int = 1, **fields: Any) -> bytes:
    args = FETCH_METHODS[name].args(**fields)
    return encode_message(name.encode(), MessageType.CALL, seqid, args, strict=True, framed=True)


def test_negative_values_are_refused_calls_and_the_connection_goes_on() -> None:
    data = raw_call("fetch", 1, category=b"c", partition=0, offset=-1) + raw_call("describe", 2)
    rejected, describe = server_events(data)
    assert isinstance(rejected, RejectedFetchCall)
    assert isinstance(rejected.error, BadArguments)
    assert "offset" in rejected.error.reason
    assert isinstance(describe, FetchCall) and describe.request == Describe()


def test_unknown_methods_are_refused_with_an_exception_reply() -> None:
    server = FetchServerConnection()
    server.receive_data(
        encode_message(
            b"Log", MessageType.CALL, 7, FETCH_METHODS["describe"].args(), strict=True, framed=True
        )
    )
    rejected = server.next_event()
    assert isinstance(rejected, RejectedFetchCall)
    assert isinstance(rejected.error, UnknownMethod)
    client = FetchClientConnection()
    client.call(Describe())  # seqid 1: answer it with the refusal's form
    reply = server.reply_exception(
        FetchCall("describe", 1, True, Describe()), AppErrorType.UNKNOWN_METHOD, "no"
    )
    with pytest.raises(RemoteApplicationError):
        answer(client, reply)


def test_missing_arguments_take_empty_values() -> None:
    (call,) = server_events(raw_call("fetch", 3, category=b"x"))
    assert isinstance(call, FetchCall)
    assert call.request == FetchRequest(b"x", 0, 0, 0, 0, 0)


def feed_server(chunks: list[bytes]) -> tuple[list[str], type[BaseException] | None]:
    server = FetchServerConnection()
    seen: list[str] = []
    try:
        for chunk in [*chunks, b""]:
            server.receive_data(chunk)
            while (event := server.next_event()) is not NEED_DATA and event is not CLOSED:
                if isinstance(event, FetchCall):
                    seen.append(repr(event.request))
                    server.reply_exception(event, AppErrorType.INTERNAL_ERROR, "x")
                else:
                    seen.append(type(event.error).__name__)
                    server.reply_rejected(event)
            if event is CLOSED:
                break
    except ProtocolError:
        return seen, ProtocolError
    return seen, None


def feed_client(chunks: list[bytes]) -> tuple[list[str], str | None]:
    client = FetchClientConnection()
    for _ in range(3):
        client.call(Describe())
    seen: list[str] = []
    try:
        for chunk in [*chunks, b""]:
            client.receive_data(chunk)
            while (event := client.next_event()) is not NEED_DATA and event is not CLOSED:
                seen.append(repr(event))
            if event is CLOSED:
                break
    except (ProtocolError, FetchRefused, RemoteApplicationError) as exc:
        return seen, type(exc).__name__
    return seen, None


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    assert feed_server([data]) == feed_server([data[i : i + 1] for i in range(len(data))])
    assert feed_client([data]) == feed_client([data[i : i + 1] for i in range(len(data))])


@given(requests, st.data())
def test_mutated_calls_parse_or_raise(request: Any, data: st.DataObject) -> None:
    message = bytearray(FetchClientConnection().call(request))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(message) - 1))
        message[i] = data.draw(st.integers(0, 255))
    raw = bytes(message)
    assert feed_server([raw]) == feed_server([raw[i : i + 1] for i in range(len(raw))])


def fetch_call(strict: bool, seqid: int = 1) -> FetchCall:
    return FetchCall("fetch", seqid, strict, FetchRequest(b"c", 0, 0, 10, 10, 0))


def thriftpy2_reply(call: FetchCall, value: FetchResult) -> bytes:
    """The reply as thriftpy2 encodes it whole: what ``reply_parts`` must send, byte for byte."""
    result = FETCH_METHODS["fetch"].result()
    result.success = fetch_thrift.FetchResult(
        records=bytes(value.records),
        next_offset=value.next_offset,
        earliest=value.earliest,
        high_water_mark=value.high_water_mark,
        gap=value.gap,
        gap_documented=value.gap_documented,
    )
    return encode_message(
        b"fetch", MessageType.REPLY, call.seqid, result, strict=call.strict, framed=True
    )


@given(results, st.booleans(), st.booleans(), st.booleans(), i32)
def test_a_fetch_reply_is_sent_as_thriftpy2_encodes_it_with_the_records_as_given(
    value: FetchResult, gap: bool, documented: bool, strict: bool, seqid: int
) -> None:
    value = FetchResult(
        value.records, value.next_offset, value.earliest, value.high_water_mark, gap, documented
    )
    call = fetch_call(strict, seqid)
    parts = FetchServerConnection().reply_parts(call, value)
    assert b"".join(parts) == thriftpy2_reply(call, value)
    if value.records:
        # The records are one of the buffers, not a copy of them.
        assert any(part is value.records for part in parts)


@pytest.mark.parametrize("chunk", [4099, 65536, 1 << 20, 8 << 20])
def test_the_client_takes_large_records_as_a_view_of_the_reply(chunk: int) -> None:
    records = bytes(range(256)) * (6 * 4096 + 3)  # 6 MiB and a bit: a large frame
    value = FetchResult(records, 99, 1, 100)
    client = FetchClientConnection()
    client.call(FetchRequest(b"c", 0, 0, 10, 10, 0))
    data = b"".join(FetchServerConnection().reply_parts(fetch_call(True), value))
    # The frame header split too, then reads of ``chunk`` bytes.
    pieces = [data[:3], data[3:9], *(data[i : i + chunk] for i in range(9, len(data), chunk))]
    events = []
    for piece in pieces:
        client.receive_data(piece)
        if (event := client.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [value]
    (got,) = events
    assert isinstance(got, FetchResult) and isinstance(got.records, memoryview)


def struct_field(ftype: int, fid: int, value: bytes) -> bytes:
    return bytes([ftype]) + fid.to_bytes(2, "big") + value


def hand_written_reply(fields: list[bytes]) -> bytes:
    """A fetch reply whose success struct holds ``fields`` in the order given."""
    body = b"\x80\x01\x00\x02" + (5).to_bytes(4, "big") + b"fetch" + (1).to_bytes(4, "big")
    body += struct_field(12, 0, b"".join(fields) + b"\x00") + b"\x00"
    return len(body).to_bytes(4, "big") + body


def binary_field(fid: int, value: bytes) -> bytes:
    return struct_field(11, fid, len(value).to_bytes(4, "big") + value)


def i64_field(fid: int, value: int) -> bytes:
    return struct_field(10, fid, value.to_bytes(8, "big"))


def test_records_laid_out_otherwise_decode_as_thriftpy2_reads_them() -> None:
    ranges = [i64_field(2, 7), i64_field(3, 1), i64_field(4, 9)]
    # Records after the other fields: the general decoding.
    later = hand_written_reply([*ranges, binary_field(1, b"abc")])
    # Records twice: the last one counts, as thriftpy2 has it (the last non-empty one, here).
    twice = hand_written_reply([binary_field(1, b"first"), *ranges, binary_field(1, b"last")])
    for data, records in [(later, b"abc"), (twice, b"last")]:
        client = FetchClientConnection()
        client.call(FetchRequest(b"c", 0, 0, 10, 10, 0))
        assert answer(client, data) == FetchResult(records, 7, 1, 9)


def fetch_answers(chunks: list[bytes]) -> tuple[list[str], str | None]:
    client = FetchClientConnection()
    client.call(FetchRequest(b"c", 0, 0, 10, 10, 0))
    seen: list[str] = []
    try:
        for chunk in [*chunks, b""]:
            client.receive_data(chunk)
            while (event := client.next_event()) is not NEED_DATA and event is not CLOSED:
                assert isinstance(event, FetchResult)
                seen.append(repr((bytes(event.records), event.next_offset, event.earliest)))
            if event is CLOSED:
                break
    except (ProtocolError, FetchRefused, RemoteApplicationError) as exc:
        return seen, type(exc).__name__
    return seen, None


@given(results.filter(lambda r: bool(r.records)), st.data())
def test_mutated_fetch_replies_parse_or_raise(value: FetchResult, data: st.DataObject) -> None:
    reply = bytearray(FetchServerConnection().reply(fetch_call(True), value))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(reply) - 1))
        reply[i] = data.draw(st.integers(0, 255))
    raw = bytes(reply)
    assert fetch_answers([raw]) == fetch_answers([raw[i : i + 1] for i in range(len(raw))])


def large_reply(seqid: int = 1) -> tuple[FetchResult, bytes]:
    value = FetchResult(bytes(range(256)) * (5 * 4096 + 1), 7, 0, 9)  # 5 MiB and a bit
    call = fetch_call(True, seqid)
    return value, b"".join(FetchServerConnection().reply_parts(call, value))


def fetching_client(calls: int = 1) -> FetchClientConnection:
    client = FetchClientConnection()
    for _ in range(calls):
        client.call(FetchRequest(b"c", 0, 0, 10, 10, 0))
    return client


@pytest.mark.parametrize("step", [1000, 65536, 1 << 20])
def test_a_large_reply_is_received_into_its_own_buffer(step: int) -> None:
    value, data = large_reply()
    client = fetching_client()
    client.receive_data(data[:step])  # the frame header first, then straight into the buffer
    at = step
    while (buffer := client.receive_buffer()) is not None:
        assert client.next_event() is NEED_DATA
        n = min(len(buffer), step, len(data) - at)
        buffer[:n] = data[at : at + n]
        client.received(n)
        at += n
    got = client.next_event()
    assert got == value and at == len(data)
    assert isinstance(got, FetchResult) and isinstance(got.records, memoryview)
    assert got.records.readonly


def test_bytes_after_a_large_reply_are_the_next_reply() -> None:
    value, first = large_reply(1)
    client = fetching_client(2)
    second = FetchServerConnection().reply(fetch_call(True, 2), FetchResult(b"x", 1, 0, 1))
    client.receive_data(first + second)
    assert client.next_event() == value
    assert client.next_event() == FetchResult(b"x", 1, 0, 1)
    assert client.next_event() is NEED_DATA


@pytest.mark.parametrize("closing", ["receive_data", "received"])
def test_a_peer_closing_inside_a_large_reply_is_a_protocol_error(closing: str) -> None:
    _, data = large_reply()
    client = fetching_client()
    client.receive_data(data[: 1 << 20])
    if closing == "receive_data":
        client.receive_data(b"")
    else:
        client.received(0)
    with pytest.raises(ProtocolError):
        client.next_event()
    with pytest.raises(ProtocolError):  # and it stays broken
        client.next_event()


@given(st.lists(st.integers(1, 3 << 20), min_size=1, max_size=6))
def test_any_cut_of_a_large_reply_decodes_the_same(cuts: list[int]) -> None:
    value, data = large_reply()
    client = fetching_client()
    at = 0
    for cut in [*cuts, len(data)]:
        client.receive_data(data[at : at + cut])
        at += cut
        if at >= len(data):
            break
        assert client.next_event() is NEED_DATA
    assert client.next_event() == value
