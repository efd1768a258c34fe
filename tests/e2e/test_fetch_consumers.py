"""A consumer process that cannot read the server's journal: it consumes through the fetch
service.

A real ``pipeline serve`` with ``[fetch]`` configured and a real ``pipeline consume`` whose
journal directory is empty (and whose group says ``fetch_from``): every acknowledged event
reaches the files sink exactly once, also when the server is SIGKILLed and restarted while the
consumer fetches (the reader reconnects with backoff; its position never moves on a failure).
"""

from __future__ import annotations

import collections
import time
from functools import partial
from pathlib import Path

from fetch_procs import Proc, connectable, free_port, send, wait_for


def delivered(root: Path, count: int) -> bool:
    return len(lines(root)) >= count


def lines(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for path in sorted((root / "app").glob("app_[0-9]*")):
        out += path.read_bytes().splitlines()
    return out


def test_a_consumer_without_the_journal_delivers_every_event_once_across_server_kills(
    tmp_path: Path,
) -> None:
    port, fetch_port = free_port(), free_port()
    server_config = tmp_path / "server.toml"
    server_config.write_text(
        f"""
[server]
port = {port}
[journal]
dir = "{tmp_path / "journal"}"
segment_bytes = 65536
[fetch]
port = {fetch_port}
[[routing.routes]]
category = "default"
partitions = 2
"""
    )
    empty = tmp_path / "consumer-host" / "journal"
    empty.mkdir(parents=True)
    consumer_config = tmp_path / "consumer.toml"
    consumer_config.write_text(
        f"""
[journal]
dir = "{empty}"
[coordination]
state_dir = "{tmp_path / "consumer-host" / "state"}"
rescan_interval_s = 0.2
[[consumers]]
name = "archive"
categories = ["app"]
sink = "files"
commit_interval_s = 0.1
discover_interval_s = 0.2
backoff_max_s = 0.5
fetch_from = "127.0.0.1:{fetch_port}"
[consumers.files]
file_path = "{tmp_path / "files"}"
add_newlines = true
"""
    )
    server = Proc(["serve", "--config", str(server_config)], tmp_path / "server.log")
    consumer = Proc(
        ["consume", "--config", str(consumer_config), "--group", "archive"],
        tmp_path / "consumer.log",
    )
    sent: list[bytes] = []
    try:
        server.start()
        wait_for(lambda: connectable(port) and connectable(fetch_port), what="server up")
        consumer.start()
        for round_ in range(4):
            for call in range(10):
                batch = [b"r%d-c%02d-m%03d" % (round_, call, i) for i in range(50)]
                send(port, batch)
                sent += batch
            if round_ % 2 == 0:
                # Caught up: the consumer waits in a long poll at the tail when it is killed.
                wait_for(partial(delivered, tmp_path / "files", len(sent)), 60, "caught up")
            # Kill the server while the consumer is fetching, then bring it back.
            server.kill()
            time.sleep(0.3)
            server.start()
        wait_for(lambda: len(lines(tmp_path / "files")) >= len(sent), 60, "all delivered")
        time.sleep(0.5)  # anything delivered twice would show up now
        got = lines(tmp_path / "files")
        counts = collections.Counter(got)
        assert not [m for m, n in counts.items() if n > 1], "delivered more than once"
        assert set(got) == set(sent)
        assert list(empty.iterdir()) == []  # the consumer never had the journal
        assert consumer.alive(), consumer.log.read_text()[-3000:]
        # The kills cut its fetches (long polls at the tail, at least): it reconnected.
        assert "fetch failed; reconnecting" in consumer.log.read_text()
    except BaseException:
        print(server.log.read_text()[-5000:] if server.log.exists() else "")
        print(consumer.log.read_text()[-5000:] if consumer.log.exists() else "")
        raise
    finally:
        consumer.stop()
        server.stop()
