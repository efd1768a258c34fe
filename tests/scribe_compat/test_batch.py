"""LogBatch: columns of one Log call, and the byte count a decoder makes off the event loop."""

from __future__ import annotations

from scribe_compat import Call, LogBatch, LogEntry, ServerConnection
from scribe_compat.codec import encode_call
from scribe_compat.idl import METHODS


def test_a_decoded_batch_carries_its_message_bytes_counted() -> None:
    entries = [LogEntry(category=b"c", message=b"m" * i) for i in range(50)]
    conn = ServerConnection()
    args = METHODS["Log"].args(messages=entries)
    conn.receive_data(encode_call("Log", args, seqid=1, framed=True, strict=False))
    call = conn.next_event()
    assert isinstance(call, Call)
    assert call.log_batch.counted_bytes == sum(range(50))
    assert call.log_batch.message_bytes == sum(range(50))


def test_an_uncounted_batch_counts_when_asked_and_equals_a_counted_one() -> None:
    plain = LogBatch([b"a", b"b"], [b"xyz", b""])
    assert plain.counted_bytes is None
    assert plain.message_bytes == 3
    assert plain == LogBatch.counted([b"a", b"b"], [b"xyz", b""], None)
