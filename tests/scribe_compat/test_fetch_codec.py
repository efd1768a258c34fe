"""The fetch codec, without sockets.

Invariants:
* every call and every reply round-trips: what the client encodes the server decodes to the
  same typed request, and what the server answers the client decodes to the same value (or
  the same ``FetchRefused``);
* fed any bytes, whole or one byte at a time, either side yields events and then
  ``NEED_DATA``/``CLOSED``, or raises ``ProtocolError`` (the client also ``FetchRefused`` /
  ``RemoteApplicationError`` for replies that carry them): never another exception, never a
  hang; both feedings agree;
* negative values and wrong-typed arguments are refused calls, and the connection goes on.
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
from scribe_compat.idl import FETCH_METHODS, MessageType

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
