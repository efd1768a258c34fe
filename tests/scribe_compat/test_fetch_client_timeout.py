"""The fetch client's timeout bounds a call beyond the server's long poll, and says so."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from scribe_compat import AsyncFetchClient, ClientTimeoutError, FetchRequest, TransportError


async def test_a_fetch_that_gets_no_reply_names_its_whole_bound() -> None:
    client_stream, _silent_server = trio.testing.memory_stream_pair()
    client = AsyncFetchClient(client_stream, timeout=0.05, peer="silent:1")
    with trio.fail_after(5), pytest.raises(ClientTimeoutError) as caught:
        # The server may hold a fetch for its wait_ms (100 ms) before answering empty.
        await client.fetch(FetchRequest(b"c", 0, 0, 0, 10, 100))
    assert caught.value.reason == "no reply within 0.15s (timeout 0.05s + wait 0.1s)"
    assert caught.value.peer == "silent:1"
    with pytest.raises(TransportError, match="unusable"):  # the call was cut short
        await client.describe()
