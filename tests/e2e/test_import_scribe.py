"""Each golden scribe.conf, imported and run: a message per category lands where Scribe's store
would have put it — under the file store's directory, or at the upstream Scribe server (a
second ``pipeline serve``) — and a null store's categories, or those no store takes, land
nowhere.  The configuration is used as ``import-scribe`` prints it, after ``config check``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scribe_compat import LogEntry, ResultCode

from .conftest import ServerFactory, ServerProcess, journal_messages, run_pipeline

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "scribe_conf"
DEADLINE_S = 30.0


@dataclass(frozen=True)
class Case:
    """A golden file: where each category's message must land (a directory under the file
    stores' root, relative, or "upstream"), and categories that must land nowhere."""

    conf: str
    lands: dict[str, tuple[str, ...]]
    nowhere: tuple[str, ...] = ()


CASES = [
    # Scribe's model stores: <file_path>/<category>/<category>-<date>_NNNNN.
    Case("central_files.conf", {"test": ("test",), "other": ("other",)}),
    Case("leaf_buffer_network.conf", {"test2": ("upstream",), "any": ("upstream",)}),
    # bucket_me in Scribe: <file_path>/bucket00N/bucket_me_NNNNN; here one directory for all
    # buckets (the report says so).  audit keeps Scribe's own layout exactly.
    Case("bucket_files.conf", {"bucket_me": ("bucket_me",), "audit": ("audit",)}, ("other",)),
    Case(
        "multi_prefix.conf",
        {
            "web_access": ("web/web_access", "upstream"),
            "api_calls": ("api/api_calls",),
            "payments": ("money/payments",),
            "refunds": ("money/refunds",),
        },
        ("nobody_takes_me",),
    ),
    Case(
        "null_default_forward.conf",
        {"local_audit": ("local_audit",), "anything_else": ("upstream",)},
        ("debug_sql", "noise"),
    ),
]


class RunProcess(ServerProcess):
    """``pipeline run`` (the server and its embedded consumer groups) on 127.0.0.1:0."""

    def arguments(self) -> list[str | Path]:
        assert self.config is not None
        return [
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--journal-dir",
            self.journal_dir,
            "--config",
            self.config,
        ]


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[RunProcess]]:
    started: list[RunProcess] = []
    yield started
    for process in started:
        process.kill()


def landed(directory: Path, message: bytes) -> bool:
    """Whether a data file of the files sink in ``directory`` holds ``message``."""
    if not directory.is_dir():
        return False
    return any(
        message in path.read_bytes()
        for path in directory.iterdir()
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".")
    )


@pytest.mark.parametrize("case", CASES, ids=[c.conf for c in CASES])
def test_an_imported_scribe_conf_routes_as_scribe_would(
    case: Case, tmp_path: Path, pipeline_server: ServerFactory, runs: list[RunProcess]
) -> None:
    files = tmp_path / "files"
    text = (GOLDEN / case.conf).read_text().replace("/tmp/scribetest", str(files))
    upstream = None
    if "remote_port=1463" in text:
        upstream = pipeline_server(journal_dir=tmp_path / "upstream-journal").start()
        text = text.replace("remote_port=1463", f"remote_port={upstream.port}")
    scribe_conf = tmp_path / "scribe.conf"
    scribe_conf.write_text(text)

    imported = run_pipeline("config", "import-scribe", scribe_conf)
    assert imported.returncode == 0, imported.stderr.decode()
    config = tmp_path / "pipeline.toml"
    config.write_bytes(imported.stdout)
    checked = run_pipeline("config", "check", "--config", config)
    assert checked.returncode == 0, checked.stderr.decode()
    assert checked.stdout.decode().startswith(f"{config}: valid;")

    process = RunProcess(tmp_path / "journal", tmp_path / "run.log", config, ())
    runs.append(process)
    process.start(timeout=30)
    messages = {category: f"to {category} {time.time_ns()}".encode() for category in case.lands}
    messages.update({c: f"nowhere {c}".encode() for c in case.nowhere})
    with process.client() as client:
        for category, message in messages.items():
            entry = LogEntry(category.encode(), message)
            assert client.log([entry]) == ResultCode.OK, category

    def delivered(category: str, place: str) -> bool:
        message = messages[category]
        if place == "upstream":
            assert upstream is not None
            return message in journal_messages(upstream.journal_dir).get(category.encode(), [])
        return landed(files / place, message)

    deadline = time.monotonic() + DEADLINE_S
    waiting = [(c, p) for c, places in case.lands.items() for p in places]
    while waiting and time.monotonic() < deadline:
        waiting = [(c, p) for c, p in waiting if not delivered(c, p)]
        time.sleep(0.1)
    assert not waiting, f"not delivered: {waiting}\n{process.log()[-4000:]}"

    # Everything routed has arrived; what Scribe would have dropped is nowhere.
    for category in case.nowhere:
        message = messages[category]
        assert not any(message in p.read_bytes() for p in files.rglob("*") if p.is_file())
        if upstream is not None:
            arrived = journal_messages(upstream.journal_dir)
            assert all(message not in found for found in arrived.values()), category
    process.terminate()
