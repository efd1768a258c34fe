"""Golden request frames captured from Apache Thrift's generated client (tests/golden/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribe_compat import CLOSED, NEED_DATA, Call, ClientConnection, ResultCode, ServerConnection

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
MANIFEST = json.loads((GOLDEN / "golden.json").read_text())


@pytest.mark.parametrize("case", sorted(MANIFEST))
def test_golden_frame_decodes(case: str) -> None:
    expected = MANIFEST[case]
    data = (GOLDEN / f"{case}.bin").read_bytes()
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        conn = ServerConnection()
        events = []
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA and event is not CLOSED:
                events.append(event)
        (call,) = events
        assert isinstance(call, Call)
        assert call.name == expected["method"]
        assert (call.seqid, call.strict, call.framed) == (
            expected["seqid"],
            expected["strict"],
            expected["framed"],
        )
        assert call.oneway is (call.name in ("reinitialize", "shutdown"))
        if call.name == "Log":
            metadata = {bytes.fromhex(k): bytes.fromhex(v) for k, v in expected["metadata"].items()}
            assert [(e.category, e.message, e.metadata) for e in call.entries] == [
                (bytes.fromhex(c), bytes.fromhex(m), metadata or None)
                for c, m in expected["entries"]
            ]
            reply = conn.reply(call, ResultCode.OK)
            client = ClientConnection(framed=call.framed, strict=call.strict)
            client.expect("Log", call.seqid)
            client.receive_data(reply)
            answer = client.next_event()
            assert answer is not NEED_DATA and answer is not CLOSED
            assert answer.value == ResultCode.OK


def test_golden_set_covers_every_form() -> None:
    forms = {(c["framed"], c["strict"]) for c in MANIFEST.values() if c["method"] == "Log"}
    assert forms == {(True, True), (True, False), (False, True), (False, False)}
