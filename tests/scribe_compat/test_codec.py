"""ServerConnection / ClientConnection without sockets."""

from __future__ import annotations

import struct
import threading
import tracemalloc
from typing import Any

import pytest

from scribe_compat import (
    CLOSED,
    NEED_DATA,
    AppErrorType,
    BadArguments,
    Call,
    ClientConnection,
    CodecLimits,
    ContainerTooLarge,
    FrameTooLarge,
    Framing,
    LogEntry,
    MalformedMessage,
    MessageTooLarge,
    NestingTooDeep,
    ProtocolError,
    RejectedCall,
    RemoteApplicationError,
    ResultCode,
    ServerConnection,
    TooManyEntries,
    UnknownMethod,
    detect_framing,
)
from scribe_compat.codec import encode_call
from scribe_compat.idl import METHODS, MessageType

FORMS = [(f, s) for f in (True, False) for s in (True, False)]
FORM_IDS = [f"{'framed' if f else 'unframed'}-{'strict' if s else 'nonstrict'}" for f, s in FORMS]


def log_request(
    entries: list[Any], *, framed: bool = True, strict: bool = False, seqid: int = 1
) -> bytes:
    return encode_call(
        "Log", METHODS["Log"].args(messages=entries), seqid=seqid, framed=framed, strict=strict
    )


def header(name: bytes, mtype: int, seqid: int, *, strict: bool) -> bytes:
    if strict:
        return struct.pack(">IiI", 0x80010000 | mtype, len(name), 0)[:8] + name + _i32(seqid)
    return _i32(len(name)) + name + bytes([mtype]) + _i32(seqid)


def _i32(n: int) -> bytes:
    return struct.pack(">i", n)


def framed(payload: bytes) -> bytes:
    return _i32(len(payload)) + payload


def tstring(fid: int, value: bytes) -> bytes:
    return bytes([11]) + struct.pack(">h", fid) + _i32(len(value)) + value


def raw_log_body(entries: list[bytes]) -> bytes:
    """Args struct with field 1 = list<struct> of pre-encoded entry structs."""
    return b"\x0f\x00\x01\x0c" + _i32(len(entries)) + b"".join(entries) + b"\x00"


def entry_struct(*fields: bytes) -> bytes:
    return b"".join(fields) + b"\x00"


def events(conn: ServerConnection) -> list[Any]:
    out = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CLOSED:
            return out
        out.append(event)


def one_call(data: bytes, limits: CodecLimits | None = None) -> Call:
    conn = ServerConnection(limits)
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, Call), event
    assert conn.next_event() is NEED_DATA
    return event


ENTRIES = [
    LogEntry(category=b"cat\x00egory", message=b"\xff\xfe not utf-8 \x00"),
    LogEntry(category=b"", message=b""),
    LogEntry(category=b"web", message=b"x" * 5000),
]


@pytest.mark.parametrize(("is_framed", "strict"), FORMS, ids=FORM_IDS)
def test_log_call_in_each_form_round_trips(is_framed: bool, strict: bool) -> None:
    data = log_request(ENTRIES, framed=is_framed, strict=strict, seqid=4242)
    conn = ServerConnection()
    conn.receive_data(data)
    call = conn.next_event()
    assert isinstance(call, Call)
    assert conn.framing is (Framing.FRAMED if is_framed else Framing.UNFRAMED)
    assert (call.name, call.seqid, call.strict, call.framed, call.oneway) == (
        "Log",
        4242,
        strict,
        is_framed,
        False,
    )
    assert [(e.category, e.message, e.metadata) for e in call.entries] == [
        (e.category, e.message, None) for e in ENTRIES
    ]
    reply = conn.reply(call, ResultCode.TRY_LATER)
    # The reply has the request's form: framed iff framed, strict iff strict, same seqid.
    body = reply[4:] if is_framed else reply
    if is_framed:
        assert struct.unpack(">I", reply[:4])[0] == len(reply) - 4
    assert (body[:2] == b"\x80\x01") is strict
    client = ClientConnection(framed=is_framed, strict=strict)
    client.expect("Log", 4242)
    client.receive_data(reply)
    result = client.next_event()
    assert result is not NEED_DATA and result is not CLOSED
    assert (result.seqid, result.value) == (4242, ResultCode.TRY_LATER)


@pytest.mark.parametrize(("is_framed", "strict"), FORMS, ids=FORM_IDS)
def test_byte_by_byte_feeding_gives_the_same_call(is_framed: bool, strict: bool) -> None:
    data = log_request(ENTRIES, framed=is_framed, strict=strict, seqid=9)
    conn = ServerConnection()
    got = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        got.extend(events(conn))
        if i < len(data) - 1:
            assert not got
    assert len(got) == 1
    assert got[0].seqid == 9
    assert [e.message for e in got[0].entries] == [e.message for e in ENTRIES]


@pytest.mark.parametrize(("is_framed", "strict"), FORMS, ids=FORM_IDS)
def test_pipelined_calls_come_out_in_order(is_framed: bool, strict: bool) -> None:
    data = b"".join(
        log_request(
            [LogEntry(category=b"c", message=b"%d" % i)], framed=is_framed, strict=strict, seqid=i
        )
        for i in range(5)
    )
    data += encode_call(
        "getName", METHODS["getName"].args(), seqid=99, framed=is_framed, strict=strict
    )
    conn = ServerConnection()
    conn.receive_data(data)
    got = events(conn)
    assert [c.seqid for c in got] == [0, 1, 2, 3, 4, 99]
    assert [c.entries[0].message for c in got[:5]] == [b"0", b"1", b"2", b"3", b"4"]
    assert got[5].name == "getName"
    replies = b"".join(conn.reply(c, ResultCode.OK if c.name == "Log" else "n") for c in got)
    client = ClientConnection(framed=is_framed, strict=strict)
    for c in got:
        client.expect(c.name, c.seqid)
    client.receive_data(replies)
    values = [client.next_event() for _ in got]
    assert [v.value for v in values if v is not NEED_DATA and v is not CLOSED] == [0] * 5 + ["n"]


def test_unknown_fields_are_skipped_and_metadata_kept() -> None:
    unknown = (
        b"\x0a\x00\x09"
        + b"\x00" * 8  # i64 field 9
        + b"\x0f\x00\x0a\x0b"
        + _i32(2)
        + _i32(1)
        + b"a"
        + _i32(0)  # list<string> field 10
        + b"\x0c\x00\x0b"
        + b"\x08\x00\x01"
        + _i32(5)
        + b"\x00"  # struct field 11
    )
    metadata = b"\x0d\x00\x03\x0b\x0b" + _i32(1) + _i32(2) + b"k\x00" + _i32(1) + b"\xff"
    entry = entry_struct(unknown, tstring(1, b"cat"), metadata, tstring(2, b"msg"))
    body = b"\x08\x00\x07" + _i32(3) + raw_log_body([entry])  # unknown i32 args field 7
    for strict in (True, False):
        for is_framed in (True, False):
            msg = header(b"Log", MessageType.CALL, 5, strict=strict) + body
            call = one_call(framed(msg) if is_framed else msg)
            (got,) = call.entries
            assert (got.category, got.message, got.metadata) == (
                b"cat",
                b"msg",
                {b"k\x00": b"\xff"},
            )


@pytest.mark.parametrize("name", ["reinitialize", "shutdown"])
@pytest.mark.parametrize("mtype", [MessageType.CALL, MessageType.ONEWAY])
def test_reinitialize_and_shutdown_are_oneway_by_name(name: str, mtype: int) -> None:
    msg = header(name.encode(), mtype, 3, strict=False) + b"\x00"
    for data in (msg, framed(msg)):
        call = one_call(data)
        assert call.name == name
        assert call.oneway
        assert ServerConnection().reply(call) == b""
        assert ServerConnection().reply_exception(call, AppErrorType.INTERNAL_ERROR, "x") == b""


@pytest.mark.parametrize(("is_framed", "strict"), FORMS, ids=FORM_IDS)
def test_unknown_method_gets_an_unknown_method_exception(is_framed: bool, strict: bool) -> None:
    msg = header(b"frobnicate", MessageType.CALL, 77, strict=strict) + tstring(1, b"x") + b"\x00"
    data = framed(msg) if is_framed else msg
    if not is_framed and not strict:
        # An unframed non-strict call must name a known method to be recognised at all;
        # after the first call the framing is known, so the unknown name is fine.
        data = log_request([], framed=False, strict=False, seqid=1) + data
    conn = ServerConnection()
    conn.receive_data(data)
    got = events(conn)
    rejected = got[-1]
    assert isinstance(rejected, RejectedCall)
    assert isinstance(rejected.error, UnknownMethod)
    assert rejected.seqid == 77
    reply = conn.reply_rejected(rejected)
    client = ClientConnection(framed=is_framed, strict=strict)
    client.expect("frobnicate", 77)
    client.receive_data(reply)
    with pytest.raises(RemoteApplicationError) as info:
        client.next_event()
    assert info.value.type == AppErrorType.UNKNOWN_METHOD
    assert "frobnicate" in info.value.message


def test_wrong_typed_arguments_are_rejected_not_fatal() -> None:
    # Log's field 1 sent as a string instead of list<LogEntry>.
    bad = header(b"Log", MessageType.CALL, 1, strict=True) + tstring(1, b"oops") + b"\x00"
    # Log's list holds i32s instead of LogEntry structs.
    bad_list = header(b"Log", MessageType.CALL, 2, strict=True) + (
        b"\x0f\x00\x01\x08" + _i32(1) + _i32(5) + b"\x00"
    )
    # An entry whose category is an i32.
    bad_entry = header(b"Log", MessageType.CALL, 3, strict=True) + raw_log_body(
        [entry_struct(b"\x08\x00\x01" + _i32(1), tstring(2, b"m"))]
    )
    good = log_request([LogEntry(category=b"c", message=b"m")], strict=True, seqid=4)
    conn = ServerConnection()
    conn.receive_data(framed(bad) + framed(bad_list) + framed(bad_entry) + good)
    got = events(conn)
    assert [type(e) for e in got] == [RejectedCall, RejectedCall, RejectedCall, Call]
    for rejected in got[:3]:
        assert isinstance(rejected.error, BadArguments)
        client = ClientConnection(framed=True, strict=True)
        client.expect("Log", rejected.seqid)
        client.receive_data(conn.reply_rejected(rejected))
        with pytest.raises(RemoteApplicationError) as info:
            client.next_event()
        assert info.value.type == AppErrorType.PROTOCOL_ERROR


def test_missing_arguments_take_defaults() -> None:
    call = one_call(framed(header(b"Log", MessageType.CALL, 1, strict=False) + b"\x00"))
    assert call.entries == []
    call = one_call(framed(header(b"getCounter", MessageType.CALL, 1, strict=False) + b"\x00"))
    assert call.args.key == b""


def test_fb303_calls_decode_and_reply() -> None:
    conn = ServerConnection()
    data = encode_call(
        "getSelectedCounters",
        METHODS["getSelectedCounters"].args(keys=["a", "b"]),
        seqid=3,
        framed=True,
        strict=True,
    )
    conn.receive_data(data)
    call = conn.next_event()
    assert isinstance(call, Call)
    assert call.args.keys == [b"a", b"b"]
    client = ClientConnection(framed=True, strict=True)
    client.expect("getSelectedCounters", 3)
    client.receive_data(conn.reply(call, {"a": 2**40}))
    reply = client.next_event()
    assert reply is not NEED_DATA and reply is not CLOSED
    assert reply.value == {"a": 2**40}


def test_client_connection_encodes_what_the_server_decodes() -> None:
    for is_framed, strict in FORMS:
        client = ClientConnection(framed=is_framed, strict=strict)
        server = ServerConnection()
        server.receive_data(client.call("setOption", key="k", value="v"))
        server.receive_data(client.call("reinitialize"))
        server.receive_data(client.call("getOption", key="k"))
        set_call, reinit, get_call = events(server)
        assert (set_call.args.key, set_call.args.value) == (b"k", b"v")
        assert reinit.oneway
        assert client.pending == 2
        client.receive_data(server.reply(set_call) + server.reply(get_call, "v"))
        first, second = client.next_event(), client.next_event()
        assert first is not NEED_DATA and first is not CLOSED and first.value is None
        assert second is not NEED_DATA and second is not CLOSED and second.value == "v"


def test_client_rejects_reply_to_another_call() -> None:
    server = ServerConnection()
    server.receive_data(
        encode_call("getName", METHODS["getName"].args(), seqid=5, framed=True, strict=False)
    )
    call = server.next_event()
    assert isinstance(call, Call)
    client = ClientConnection()
    client.expect("getName", 6)
    client.receive_data(server.reply(call, "x"))
    with pytest.raises(MalformedMessage, match="seqid"):
        client.next_event()


def test_eof_inside_a_message_is_an_error_and_clean_eof_is_closed() -> None:
    data = log_request(ENTRIES)
    conn = ServerConnection()
    conn.receive_data(data[:-3])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(MalformedMessage, match="closed"):
        conn.next_event()
    conn = ServerConnection()
    conn.receive_data(data)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Call)
    assert conn.next_event() is CLOSED


def test_errors_are_sticky() -> None:
    conn = ServerConnection()
    conn.receive_data(b"\x80\x02\x00\x01garbage")
    with pytest.raises(MalformedMessage) as first:
        conn.next_event()
    with pytest.raises(MalformedMessage) as again:
        conn.next_event()
    assert again.value is first.value


def test_framing_detection() -> None:
    assert detect_framing(b"\x80") is None
    assert detect_framing(b"\x80\x01") is Framing.UNFRAMED
    assert detect_framing(b"\x00\x00\x00\x03Lo") is None
    assert detect_framing(b"\x00\x00\x00\x03Log\x01") is Framing.UNFRAMED
    assert detect_framing(b"\x00\x00\x00\x03Lux") is Framing.FRAMED
    assert detect_framing(b"\x00\x00\x00\x03") is None  # could still be "Log"
    assert detect_framing(b"\x00\x00\x00\x07getName") is Framing.UNFRAMED
    assert detect_framing(b"\x00\x00\x01\x00") is Framing.FRAMED
    assert detect_framing(b"\x00\x00\x00\x14\x80\x01") is Framing.FRAMED


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\x02\x00\x01" + b"\x00" * 12, "frame length"),  # not 0x8001: a frame length
        (framed(b"\x80\x02\x00\x01" + b"\x00" * 12), "version"),
        (b"\xff\xff\xff\xff", "frame length"),
        (b"\x00\x00\x00\x00", "frame length"),
        (framed(b"\x00\x00\x00"), "header"),
        (framed(header(b"Log", MessageType.CALL, 1, strict=True) + b"\x00\x00"), "trailing"),
        (framed(header(b"Log", MessageType.CALL, 1, strict=True) + b"\x0f\x00"), "ends inside"),
        (framed(header(b"Log", MessageType.REPLY, 1, strict=True) + b"\x00"), "message type"),
        (framed(header(b"Log", MessageType.CALL, 1, strict=True) + b"\x07\x00\x01\x00"), "type"),
        (
            framed(header(b"Log", 1, 1, strict=True) + b"\x0b\x00\x01" + _i32(-1) + b"\x00"),
            "negative",
        ),
        (
            framed(header(b"Log", 1, 1, strict=True) + b"\x0f\x00\x01\x0c" + _i32(-2) + b"\x00"),
            "negative",
        ),
        (
            framed(header(b"Log", 1, 1, strict=True) + b"\x0f\x00\x09\x01" + _i32(9) + b"\x00"),
            "element type",
        ),
        (framed(_i32(-5)), "version"),
        (framed(_i32(100000) + b"x"), "name length"),
    ],
)
def test_malformed_input_raises_malformed_message(data: bytes, match: str) -> None:
    conn = ServerConnection()
    conn.receive_data(data)
    with pytest.raises(MalformedMessage, match=match):
        conn.next_event()


# -- limits -------------------------------------------------------------------------------------


def test_frame_limit_checked_on_the_header() -> None:
    conn = ServerConnection(
        CodecLimits(max_frame_bytes=1000, max_message_bytes=1000, max_unparsed_bytes=2000)
    )
    conn.receive_data(_i32(1001))
    with pytest.raises(FrameTooLarge) as info:
        conn.next_event()
    assert (info.value.value, info.value.maximum) == (1001, 1000)
    assert "max_frame_bytes" in str(info.value)


def test_unframed_message_limit() -> None:
    limits = CodecLimits(max_message_bytes=1000, max_frame_bytes=996, max_unparsed_bytes=1000)
    big = log_request([LogEntry(category=b"c", message=b"x" * 2000)], framed=False, strict=True)
    conn = ServerConnection(limits)
    conn.receive_data(big[:100])
    with pytest.raises(MessageTooLarge, match="max_message_bytes"):
        conn.next_event()
    # Many small strings adding up are caught as the buffer grows, too.
    many = log_request(
        [LogEntry(category=b"c", message=b"x" * 10)] * 200, framed=False, strict=True
    )
    conn = ServerConnection(limits)
    with pytest.raises(MessageTooLarge):
        for i in range(0, len(many), 64):
            conn.receive_data(many[i : i + 64])
            conn.next_event()


def test_unparsed_bytes_limit() -> None:
    # Only bytes not yet forming a complete message count: pipelined complete calls do not.
    limits = CodecLimits(max_message_bytes=100, max_unparsed_bytes=200, max_frame_bytes=196)
    small = log_request([LogEntry(category=b"c", message=b"m")], framed=False, strict=True)
    conn = ServerConnection(limits)
    conn.receive_data(small * 20)
    assert len(events(conn)) == 20
    # A frame is buffered whole before it is parsed, so the limit must hold the largest frame.
    with pytest.raises(ValueError, match="max_frame_bytes"):
        CodecLimits(max_message_bytes=100, max_unparsed_bytes=200, max_frame_bytes=1000)


@pytest.mark.parametrize("is_framed", [True, False])
def test_entries_limit(is_framed: bool) -> None:
    limits = CodecLimits(max_entries_per_call=3)
    entries = [LogEntry(category=b"c", message=b"m")] * 4
    for data in (
        log_request(entries, framed=is_framed),
        # the same with metadata, so the framed call takes the general path
        log_request(
            [LogEntry(category=b"c", message=b"m", metadata={b"a": b"b"})] * 4, framed=is_framed
        ),
    ):
        conn = ServerConnection(limits)
        conn.receive_data(data)
        with pytest.raises(TooManyEntries) as info:
            conn.next_event()
        assert (info.value.value, info.value.maximum) == (4, 3)
    assert len(one_call(log_request(entries[:3], framed=is_framed), limits).entries) == 3


@pytest.mark.parametrize("is_framed", [True, False])
def test_container_and_depth_limits(is_framed: bool) -> None:
    limits = CodecLimits(max_container_size=10, max_depth=5)
    big_list = header(b"Log", 1, 1, strict=True) + b"\x0f\x00\x09\x08" + _i32(11)
    deep = header(b"Log", 1, 1, strict=True) + b"\x0c\x00\x09" * 5 + b"\x00" * 6
    for data, error in ((big_list, ContainerTooLarge), (deep, NestingTooDeep)):
        conn = ServerConnection(limits)
        conn.receive_data(framed(data + b"\x00" * 64) if is_framed else data)
        with pytest.raises(error):
            conn.next_event()
    ok = header(b"Log", 1, 1, strict=True) + b"\x0c\x00\x09" * 3 + b"\x00" * 3 + b"\x00"
    assert one_call(framed(ok) if is_framed else ok, limits).entries == []


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        CodecLimits(max_frame_bytes=0)
    with pytest.raises(ValueError, match="max_unparsed_bytes"):
        CodecLimits(max_unparsed_bytes=10, max_message_bytes=20)


def test_slow_drip_is_linear() -> None:
    """Scanning resumes where it stopped: 20,000 one-byte feeds must not rescan the buffer."""
    import time

    data = log_request(
        [LogEntry(category=b"c", message=b"m" * 10)] * 1000, framed=False, strict=True
    )
    conn = ServerConnection()
    start = time.perf_counter()
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        conn.next_event() if i < len(data) - 1 else None
    assert isinstance(conn.next_event(), Call)
    # Quadratic rescanning of ~20 KB would take seconds; linear takes well under one.
    assert time.perf_counter() - start < 3.0


def test_reply_exception_for_handler_errors() -> None:
    call = one_call(log_request([], strict=True, seqid=12))
    conn = ServerConnection()
    reply = conn.reply_exception(call, AppErrorType.INTERNAL_ERROR, "boom")
    client = ClientConnection(framed=True, strict=True)
    client.expect("Log", 12)
    client.receive_data(reply)
    with pytest.raises(RemoteApplicationError) as info:
        client.next_event()
    assert (info.value.type, info.value.message) == (AppErrorType.INTERNAL_ERROR, "boom")


def test_any_call_sent_as_oneway_gets_no_reply() -> None:
    msg = header(b"getName", MessageType.ONEWAY, 3, strict=True) + b"\x00"
    call = one_call(framed(msg))
    assert call.oneway
    assert ServerConnection().reply(call, "name") == b""


@pytest.mark.parametrize("is_framed", [True, False])
@pytest.mark.parametrize("with_metadata", [True, False])
def test_log_batch_columns_match_the_entries(is_framed: bool, with_metadata: bool) -> None:
    # Calls of the common shape, with or without metadata, are sliced into columns without
    # thriftpy2 objects.
    sent = [
        LogEntry(
            category=b"c%d\x00" % (i % 3),
            message=b"\xff%d" % i,
            metadata={b"k": b"%d" % i} if with_metadata and i % 2 else None,
        )
        for i in range(7)
    ]
    call = one_call(log_request(sent, framed=is_framed))
    batch = call.log_batch
    assert batch.categories == [e.category for e in sent]
    assert batch.messages == [e.message for e in sent]
    expected_metadata = [e.metadata for e in sent] if with_metadata else None
    assert batch.metadata == expected_metadata
    assert call.args is None
    assert [(e.category, e.message, e.metadata) for e in batch.entries()] == [
        (e.category, e.message, e.metadata) for e in sent
    ]


def test_an_empty_list_cut_before_its_stop_byte_is_a_protocol_error() -> None:
    # A framed Log whose args end right after "list of 0 structs": the fast path must not read
    # past the end (IndexError would break the codec's contract).
    body = bytes.fromhex("0f00010c00000000")
    message = _i32(3) + b"Log" + bytes([1]) + _i32(7) + body
    conn = ServerConnection()
    conn.receive_data(framed(message))
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_unparsed_bytes_must_hold_a_whole_frame() -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        CodecLimits(max_frame_bytes=32 << 20)
    CodecLimits(max_frame_bytes=32 << 20, max_unparsed_bytes=(32 << 20) + 4)


# -- buffers: grown as bytes arrive, given back when no longer needed ----------------------------

BIG = CodecLimits(
    max_frame_bytes=4 << 20, max_message_bytes=4 << 20, max_unparsed_bytes=(4 << 20) + 65536
)


def retained_by(action: Any) -> int:
    """Bytes still allocated (by Python's allocators) after ``action()`` returns."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = action()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return after - before


def test_a_declared_frame_size_reserves_nothing() -> None:
    conn = ServerConnection(BIG)
    declared = _i32(4 << 20) + header(b"Log", MessageType.CALL, 1, strict=False)

    def feed() -> ServerConnection:
        conn.receive_data(declared)
        assert conn.next_event() is NEED_DATA
        return conn

    assert retained_by(feed) < 64 * 1024


def test_a_completed_large_call_leaves_no_buffer_behind() -> None:
    request = log_request([LogEntry(category=b"c", message=b"m" * (3 << 20))])
    conn = ServerConnection(BIG)

    def call_and_drop() -> ServerConnection:
        conn.receive_data(request)
        event = conn.next_event()
        assert isinstance(event, Call) and len(event.log_batch) == 1
        del event
        assert conn.buffered == 0
        return conn  # the connection lives on, idle: it must not keep the call's bytes

    assert retained_by(call_and_drop) < 64 * 1024


@pytest.mark.parametrize("cut", ["eof", "bad-type-byte"])
def test_a_broken_connection_drops_its_buffer_at_once(cut: str) -> None:
    # The error (and the traceback it carries) lives on in the connection, which raises it
    # again, and in the server's frames until a collection: neither may keep the bytes alive.
    entries = [LogEntry(category=b"c", message=b"m" * (3 << 20))]
    if cut == "eof":
        request = log_request(entries)
        chunks = [request[: len(request) // 2], b""]
    else:  # unframed: the walk meets a bad type byte after the whole message string
        request = log_request(entries, framed=False, strict=True)
        chunks = [request[:-2] + b"\x63\x00\x01\x00"]
    del request
    conn = ServerConnection(BIG)

    def break_it() -> tuple[ServerConnection, ProtocolError]:
        for chunk in chunks:
            assert conn.next_event() is NEED_DATA
            conn.receive_data(chunk)
        chunks.clear()
        with pytest.raises(ProtocolError) as info:
            conn.next_event()
        assert conn.buffered == 0
        with pytest.raises(ProtocolError):
            conn.next_event()
        return conn, info.value

    assert retained_by(break_it) < 64 * 1024


# -- next_message and decode: the costly half can run elsewhere ----------------------------------


def metadata_request(n: int) -> bytes:
    entries = [LogEntry(category=b"c", message=b"m%d" % i, metadata={b"k": b"v"}) for i in range(n)]
    return log_request(entries)


@pytest.mark.parametrize(("framed_form", "strict"), FORMS, ids=FORM_IDS)
def test_next_message_then_decode_is_next_event(framed_form: bool, strict: bool) -> None:
    plain = [LogEntry(category=b"c", message=b"m%d" % i) for i in range(3)]
    data = log_request(plain, framed=framed_form, strict=strict) + encode_call(
        "getName", METHODS["getName"].args(), seqid=2, framed=framed_form, strict=strict
    )
    reference = ServerConnection()
    reference.receive_data(data)
    expected = [reference.next_event(), reference.next_event()]
    conn = ServerConnection()
    conn.receive_data(data)
    got = []
    for _ in expected:
        message = conn.next_message()
        assert message is not NEED_DATA and message is not CLOSED
        assert message.size > 0
        got.append(conn.decode(message))
    assert conn.next_message() is NEED_DATA
    for want, have in zip(expected, got, strict=True):
        assert isinstance(want, Call) and isinstance(have, Call)
        assert (have.name, have.seqid, have.strict, have.framed) == (
            want.name,
            want.seqid,
            want.strict,
            want.framed,
        )
    assert got[0].entries == plain  # type: ignore[union-attr]


def entry_with_unknown_field() -> bytes:
    """A Log call whose one entry carries field 4 (an i64) after its message."""
    entry = b"\x0b\x00\x01" + _i32(1) + b"c" + b"\x0b\x00\x02" + _i32(1) + b"m"
    entry += b"\x0a\x00\x04" + struct.pack(">q", 7) + b"\x00"
    body = b"\x0f\x00\x01\x0c" + _i32(1) + entry + b"\x00"
    return framed(header(b"Log", MessageType.CALL, 1, strict=False) + body)


def test_decode_common_log_takes_only_the_common_shape() -> None:
    conn = ServerConnection()
    conn.receive_data(metadata_request(2) + entry_with_unknown_field())
    with_metadata = conn.next_message()
    unknown_field = conn.next_message()
    assert with_metadata is not NEED_DATA and with_metadata is not CLOSED
    assert unknown_field is not NEED_DATA and unknown_field is not CLOSED
    call = conn.decode_common_log(with_metadata)
    assert call is not None and call.args is None
    assert call.log_batch.metadata == [{b"k": b"v"}, {b"k": b"v"}]
    assert conn.decode_common_log(unknown_field) is None
    general = conn.decode_general(unknown_field)
    assert isinstance(general, Call)
    assert general.log_batch.messages == [b"m"] and general.log_batch.metadata is None


@pytest.mark.parametrize(
    "where", ["first", "last", "middle", "all", "empty-map"], ids=lambda w: f"metadata-{w}"
)
def test_metadata_anywhere_takes_the_fast_path(where: str) -> None:
    def meta(i: int) -> dict[bytes, bytes] | None:
        if where == "empty-map":
            return {} if i == 2 else None
        chosen = {"first": i == 0, "last": i == 4, "middle": i == 2, "all": True}[where]
        return {b"k%d" % i: b"\x00v", b"": b""} if chosen else None

    sent = [LogEntry(category=b"c", message=b"m%d" % i, metadata=meta(i)) for i in range(5)]
    call = one_call(log_request(sent))
    assert call.args is None
    assert call.log_batch.metadata == [e.metadata for e in sent]


def test_a_metadata_map_over_the_container_limit_is_refused_by_name() -> None:
    limits = CodecLimits(max_container_size=3)
    pairs = {b"k%d" % i: b"v" for i in range(4)}
    conn = ServerConnection(limits)
    conn.receive_data(log_request([LogEntry(category=b"c", message=b"m", metadata=pairs)]))
    with pytest.raises(ContainerTooLarge):
        conn.next_event()


def test_decode_in_another_thread() -> None:
    conn = ServerConnection()
    conn.receive_data(metadata_request(1000))
    message = conn.next_message()
    assert message is not NEED_DATA and message is not CLOSED
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(conn.decode(message)))
    worker.start()
    worker.join(10)
    (event,) = results
    assert isinstance(event, Call) and len(event.log_batch) == 1000


def test_a_fatal_error_found_while_decoding_breaks_the_connection() -> None:
    body = header(b"Log", MessageType.CALL, 1, strict=False) + b"\x0f\x00\x01\x0c"
    conn = ServerConnection()
    conn.receive_data(framed(body + _i32(1) + b"\x63\x00\x01\x00\x00"))  # type byte 99
    message = conn.next_message()
    assert message is not NEED_DATA and message is not CLOSED
    with pytest.raises(MalformedMessage):
        conn.decode(message)
    with pytest.raises(MalformedMessage):
        conn.next_message()
