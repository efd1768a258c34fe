"""The ``pipeline`` command as operators run it: cat, ctl, journal, and configuration errors.

Exit codes are scribe_cat's and scribe_ctrl's (84 on TRY_LATER; ``status`` 2 when ALIVE, 3
otherwise), 78 for invalid configuration, 70 when the daemon cannot start, and ``journal verify``
exits 1 when it finds damage.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from scribe_fakes import QuietFb303

from journal import PartitionId, list_partitions
from pipeline import __version__
from scribe_compat import LogBatch, LogEntry, ResultCode, ServerConfig, serve_scribe

from .conftest import (
    ServerFactory,
    journal_messages,
    pipeline_command,
    read_partition,
    run_pipeline,
    write_config,
)

pytestmark = pytest.mark.timeout(90)


def records(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


def message_bytes(record: dict[str, Any]) -> bytes:
    if record.get("encoding") == "base64":
        return base64.b64decode(record["message"])
    assert "encoding" not in record
    return str(record["message"]).encode("utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cat_and_journal_dump(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    target = f"127.0.0.1:{server.port}"
    stdin = b"line one\nline two\n\x00\xff\xfe binary tail"
    done = run_pipeline("cat", "-h", target, "cli_cat", input=stdin)
    assert done.returncode == 0, done
    done = run_pipeline("cat", "--lines", "-h", target, "cli_lines", input=b"a\nb\n\nc\n")
    assert done.returncode == 0, done
    done = run_pipeline("cat", "-h", target, "cli_text", input="héllo wörld".encode())
    assert done.returncode == 0, done

    stored = journal_messages(server.journal_dir)
    assert stored[b"cli_cat"] == [stdin]
    assert stored[b"cli_lines"] == [b"a", b"b", b"", b"c"]

    dump = run_pipeline("journal", "dump", "--journal-dir", server.journal_dir)
    assert dump.returncode == 0, dump
    got = records(dump.stdout)
    for record in got:
        assert {"category", "partition", "offset", "timestamp", "message"} <= set(record)
        assert isinstance(record["timestamp"], int) and record["timestamp"] > 1_600_000_000_000
    by_category: dict[str, list[dict[str, Any]]] = {}
    for record in got:
        by_category.setdefault(record["category"], []).append(record)
    [binary] = by_category["cli_cat"]
    assert binary["encoding"] == "base64" and message_bytes(binary) == stdin
    assert [r["message"] for r in by_category["cli_lines"]] == ["a", "b", "", "c"]
    assert [r["offset"] for r in by_category["cli_lines"]] == [0, 1, 2, 3]
    assert by_category["cli_text"] == [
        {**by_category["cli_text"][0], "message": "héllo wörld", "partition": 0, "offset": 0}
    ]
    assert "encoding" not in by_category["cli_text"][0]

    only = run_pipeline(
        "journal", "dump", "--journal-dir", server.journal_dir, "-c", "cli_lines", "--limit", "2"
    )
    assert [r["message"] for r in records(only.stdout)] == ["a", "b"]
    listing = run_pipeline("journal", "ls", "--journal-dir", server.journal_dir, "--json")
    assert listing.returncode == 0, listing
    hwms = {r["category"]: r["high_water_mark"] for r in records(listing.stdout)}
    assert hwms == {"cli_cat": 1, "cli_lines": 4, "cli_text": 1}


class TryLaterHandler(QuietFb303):
    """A Scribe server that always asks to retry."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[bytes, bytes]]] = []

    async def log(self, batch: LogBatch) -> ResultCode:
        self.batches.append(list(zip(batch.categories, batch.messages, strict=True)))
        return ResultCode.TRY_LATER


async def test_cat_exits_84_on_try_later(nursery: trio.Nursery) -> None:
    handler = TryLaterHandler()
    config = ServerConfig(host="127.0.0.1", port=0, drain_timeout_s=1.0)
    server = await nursery.start(serve_scribe, handler, config)
    target = f"127.0.0.1:{server.address[1]}"
    done = await trio.to_thread.run_sync(
        lambda: run_pipeline("cat", "-h", target, "busy", input=b"one\ntwo\n")
    )
    assert done.returncode == 84, done
    assert b"TRY_LATER" in done.stderr
    lines = await trio.to_thread.run_sync(
        lambda: run_pipeline("cat", "--lines", "-h", target, "busy", input=b"one\ntwo\n")
    )
    assert lines.returncode == 84, lines
    assert handler.batches == [[(b"busy", b"one\ntwo\n")], [(b"busy", b"one"), (b"busy", b"two")]]
    nursery.cancel_scope.cancel()


def test_cat_to_an_unreachable_server_fails() -> None:
    done = run_pipeline("cat", "-h", f"127.0.0.1:{free_port()}", "nowhere", input=b"x")
    assert done.returncode not in (0, 84), done
    assert done.stderr


def test_ctl_commands(pipeline_server: ServerFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path / "pipeline.toml", 'name = "e2e-cli"\n')
    server = pipeline_server(config=config).start()
    port = str(server.port)
    started = time.time()

    status = run_pipeline("ctl", "status", port)
    assert (status.returncode, status.stdout) == (2, b"ALIVE\n"), status
    assert run_pipeline("cat", "-h", f"127.0.0.1:{port}", "ctl_cat", input=b"m").returncode == 0

    counters = run_pipeline("ctl", "counters", port)
    assert counters.returncode == 0, counters
    lines = counters.stdout.decode().splitlines()
    parsed = {}
    for line in lines:
        match = re.fullmatch(r"(.+): (-?\d+)", line)
        assert match, f"not a 'name: value' line: {line!r}"
        parsed[match.group(1)] = int(match.group(2))
    assert parsed["ctl_cat:received good"] == 1
    assert parsed["scribe_overall:received good"] == 1
    assert list(parsed) == sorted(parsed)  # by name, as scribe_ctrl prints them

    version = run_pipeline("ctl", "version", port)
    assert (version.returncode, version.stdout.decode().strip()) == (0, __version__)
    name = run_pipeline("ctl", "name", port)
    assert (name.returncode, name.stdout) == (0, b"e2e-cli\n")
    alive = run_pipeline("ctl", "alive", port)
    assert alive.returncode == 0
    assert started - 60 <= int(alive.stdout) <= time.time() + 1

    # reload re-reads the file: a new route takes effect without a restart.
    config.write_text(
        'name = "e2e-cli"\n[[routing.routes]]\ncategory = "default"\npartitions = 1\n'
        '[[routing.routes]]\ncategory = "wide"\npartitions = 4\n'
    )
    reload = run_pipeline("ctl", "reload", port)
    assert reload.returncode == 0, reload
    deadline = time.monotonic() + 5
    while "configuration reloaded" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    with server.client() as client:
        for _ in range(4):  # round-robin over the four new partitions
            assert client.log([LogEntry(category=b"wide", message=b"w")]) == ResultCode.OK
    wide = {i.partition for i in list_partitions(server.journal_dir) if i.category == b"wide"}
    assert wide == {0, 1, 2, 3}

    stop = run_pipeline("ctl", "stop", port)
    assert stop.returncode == 0, stop
    assert server.wait(timeout=15) == 0
    assert "msg=stopped" in server.log()
    assert read_partition(server.journal_dir, PartitionId(b"ctl_cat", 0))[0].message == b"m"

    after = run_pipeline("ctl", "status", port)
    assert after.returncode == 3, after


def test_ctl_status_unreachable_exits_3() -> None:
    done = run_pipeline("ctl", "status", str(free_port()), "--timeout", "2")
    assert done.returncode == 3, done
    for command in ("counters", "version", "stop"):
        other = run_pipeline("ctl", command, str(free_port()), "--timeout", "2")
        assert other.returncode == 1, other


def test_journal_tail_follows_new_messages(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    with server.client() as client:
        assert client.log([LogEntry(category=b"tailed", message=b"old")]) == ResultCode.OK
        tail = subprocess.Popen(
            pipeline_command(
                "journal", "tail", "--journal-dir", server.journal_dir, "-c", "tailed",
                "--count", "3",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            sent: list[bytes] = []
            deadline = time.monotonic() + 20
            while tail.poll() is None:
                assert time.monotonic() < deadline, "journal tail --count 3 did not finish"
                message = b"new %d" % len(sent)
                assert client.log([LogEntry(category=b"tailed", message=message)]) == 0
                sent.append(message)
                time.sleep(0.1)
            out, err = tail.communicate(timeout=5)
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.communicate()
    assert tail.returncode == 0, err
    got = records(out)
    assert len(got) == 3
    assert all(r["category"] == "tailed" and r["partition"] == 0 for r in got)
    offsets = [r["offset"] for r in got]
    assert offsets[0] >= 1 and offsets == list(range(offsets[0], offsets[0] + 3))
    assert [r["message"].encode() for r in got] == sent[offsets[0] - 1 : offsets[0] + 2]


def damaged_journal(pipeline_server: ServerFactory) -> tuple[Path, Path, int]:
    """A cleanly stopped journal with one byte flipped in the middle of ``damaged/0``'s segment."""
    server = pipeline_server().start()
    with server.client() as client:
        for i in range(50):
            batch = [
                LogEntry(category=b"damaged", message=b"%03d-%03d" % (i, j)) for j in range(20)
            ]
            assert client.log(batch) == ResultCode.OK
        assert client.log([LogEntry(category=b"intact", message=b"fine")]) == ResultCode.OK
    assert server.terminate() == 0
    journal_dir = server.journal_dir

    clean = run_pipeline("journal", "verify", "--journal-dir", journal_dir)
    assert clean.returncode == 0, clean
    assert b"2 partitions verified, 0 problems" in clean.stderr

    [segment] = (journal_dir / "damaged" / "0").glob("*.log")
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x55
    segment.write_bytes(bytes(data))
    return journal_dir, segment, middle


def test_journal_verify_detects_a_corrupt_byte(pipeline_server: ServerFactory) -> None:
    journal_dir, segment, middle = damaged_journal(pipeline_server)
    bad = run_pipeline("journal", "verify", "--journal-dir", journal_dir)
    assert bad.returncode == 1, bad
    problems = records(bad.stdout)
    assert problems and all(p["category"] == "damaged" for p in problems)
    assert problems[0]["file"] == str(segment)
    assert problems[0]["position"] <= middle and problems[0]["fatal"] is True
    assert b"2 partitions verified" in bad.stderr
    only_intact = run_pipeline("journal", "verify", "--journal-dir", journal_dir, "-c", "intact")
    assert only_intact.returncode == 0, only_intact

    # Reading through the damage fails, naming the file; the rest stays readable.
    dump = run_pipeline("journal", "dump", "--journal-dir", journal_dir, "-c", "damaged")
    assert dump.returncode != 0, dump
    assert str(segment).encode() in dump.stderr, dump.stderr
    intact = run_pipeline("journal", "dump", "--journal-dir", journal_dir, "-c", "intact")
    assert [r["message"] for r in records(intact.stdout)] == ["fine"]


def test_journal_dump_reports_damage_as_an_error_line(pipeline_server: ServerFactory) -> None:
    journal_dir, segment, _ = damaged_journal(pipeline_server)
    dump = run_pipeline("journal", "dump", "--journal-dir", journal_dir, "-c", "damaged")
    assert dump.returncode == 1, dump
    assert dump.stderr.startswith(b"Error: ") and str(segment).encode() in dump.stderr
    assert b"Traceback" not in dump.stderr


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[server]\nport = "x"\n', {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server"),
        ("[journal]\nsegmnt_bytes = 1\n", {}, "journal.segmnt_bytes"),
        ('[journal]\ndurability = "sometimes"\n', {}, "journal.durability"),
        ("[nonsense]\n", {}, "nonsense"),
        ("[server\n", {}, "invalid TOML"),
        ("", {"PIPELINE_ADMISSION__MAX_PENDING_BYTES": "lots"}, "admission.max_pending_bytes"),
    ],
    ids=["port-string", "port-range", "unknown-key", "bad-enum", "unknown-section", "toml", "env"],
)
def test_invalid_configuration_exits_78(
    tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    config = write_config(tmp_path / "bad.toml", toml)
    # A --port flag would override the file's (bad) port; the file is invalid, so it never binds.
    port = [] if "port" in toml else ["--port", "0"]
    args = ["serve", "--config", config, "--journal-dir", tmp_path / "j", *port]
    done = run_pipeline(*args, env=env, timeout=15)
    assert done.returncode == 78, done
    assert key in done.stderr.decode(), done.stderr
    assert not (tmp_path / "j").exists()


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    done = run_pipeline("serve", "--config", tmp_path / "nope.toml", "--port", "0")
    assert done.returncode == 78, done
    assert b"nope.toml" in done.stderr


def test_port_in_use_exits_70(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = run_pipeline("serve", "--port", str(port), "--journal-dir", tmp_path / "j")
    assert done.returncode == 70, done
    assert b"cannot listen" in done.stderr


def test_bench_ingest_says_which_category_it_wrote(pipeline_server: ServerFactory) -> None:
    server = pipeline_server().start()
    target = f"127.0.0.1:{server.port}"
    load = ["--connections", "1", "-b", "10", "-s", "20", "-d", "0.3", "--warmup", "0"]
    done = run_pipeline(
        "bench", "ingest", "--target", target, *load, "--category", "b_e2e", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["categories"] == ["b_e2e"]
    said = done.stderr.decode()
    assert f"wrote to {target}, category 'b_e2e' (--category)" in said
    assert "retention_age_s" in said
    assert b"b_e2e" in {i.category for i in list_partitions(server.journal_dir)}
