"""The configuration values the issue found, against real ``pipeline serve`` processes: NaN and
zero are refused at start (exit 78, naming the key); the smallest values that load run, with
the periodic tasks they drive (status lines, retention, the disk check) ticking without a crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scribe_compat import FbStatus, LogEntry, ResultCode

from .conftest import ServerFactory, run_pipeline, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("admission", "rate_messages_per_s", "nan"),
        ("admission", "rate_bytes_per_s", "nan"),
        ("admission", "rate_burst_s", "nan"),
        ("admission", "disk_check_interval_s", "nan"),
        ("admission", "max_pending_bytes", "0"),
        ("log", "status_interval_s", "nan"),
        ("journal", "retention_check_interval_s", "nan"),
        ("admission", "rate_burst_s", "inf"),
        ("server", "idle_timeout_s", "inf"),
    ],
)
def test_nan_and_zero_stop_the_start_naming_the_key(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    config = write_config(tmp_path / "bad.toml", f"[{table}]\n{key} = {value}\n")
    args = ["serve", "--config", config, "--journal-dir", tmp_path / "j", "--port", "0"]
    done = run_pipeline(*args, timeout=15)
    assert done.returncode == 78, done
    assert f"{table}.{key}" in done.stderr.decode(), done.stderr
    assert b"Traceback" not in done.stderr


def test_nan_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    env = {"PIPELINE_ADMISSION__RATE_BURST_S": "nan"}
    done = run_pipeline("serve", "--journal-dir", tmp_path / "j", "--port", "0", env=env)
    assert done.returncode == 78, done
    assert b"admission.rate_burst_s" in done.stderr


def test_the_smallest_accepted_values_run(pipeline_server: ServerFactory, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "edge.toml",
        "[admission]\n"
        "max_pending_bytes = 1\n"
        "rate_messages_per_s = 0.5\n"
        "rate_bytes_per_s = 1.0\n"
        "rate_burst_s = 0.001\n"
        "disk_check_interval_s = 0.001\n"
        "min_free_disk_bytes = 0\n"
        "[log]\nstatus_interval_s = 1.0\n"
        "[journal]\nretention_check_interval_s = 1.0\n",
    )
    server = pipeline_server(config=config).start()
    with server.client() as client:
        # A call larger than the whole pending limit and the byte rate still passes alone.
        assert client.log([LogEntry(category=b"c", message=b"x" * 100)]) == ResultCode.OK
        time.sleep(2.5)  # two status lines and two retention rounds at least
        assert client.get_status() == FbStatus.ALIVE
    assert server.running(), server.log()
    assert server.log().count('msg="server status"') >= 2, server.log()
    assert "Traceback" not in server.log()
    assert server.terminate() == 0
