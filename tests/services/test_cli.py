"""`pipeline services` error paths, without starting real servers: each fails with exit 3 and a
message that says what to do (no Java, port in use, no Maven, failed download, server died)."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli.common import EXIT_CONFIG, EXIT_STARTUP
from pipeline.cli.services import services

FAKE_JAVA = """#!/bin/sh
if [ "$1" = "-version" ]; then echo 'openjdk version "17.0.9" 2023-10-17' >&2; exit 0; fi
echo "fake server: java.net.BindException: Address already in use"
exit 1
"""

FAKE_MVN = """#!/bin/sh
echo "[ERROR] Failed to execute goal: Could not resolve dependencies (fake)"
exit 1
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'[services]\nvar_dir = "{tmp_path / "var"}"\ncache_dir = "{tmp_path / "cache"}"\n'
        f"[services.zookeeper]\nport = {_free_port()}\nstart_timeout_s = 20.0\n"
        f"[services.cassandra]\nport = {_free_port()}\nstorage_port = {_free_port()}\n"
    )
    return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    return folder


def run(args: list[str], path: Path, **env: str | None) -> Result:
    return CliRunner().invoke(
        services, args, env={"PATH": str(path), "JAVA_HOME": None, **env}, catch_exceptions=False
    )


def test_no_java(config_file: Path, bin_dir: Path) -> None:
    result = run(["start", "--only", "zookeeper", "--config", str(config_file)], bin_dir)
    assert result.exit_code == EXIT_STARTUP
    assert "Java not found" in result.output


@pytest.fixture
def squatter() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_port_in_use(config_file: Path, bin_dir: Path, squatter: int) -> None:
    result = run(
        ["start", "--only", "zookeeper", "--config", str(config_file)],
        bin_dir,
        PIPELINE_SERVICES__ZOOKEEPER__PORT=str(squatter),
    )
    assert result.exit_code == EXIT_STARTUP
    assert f"port 127.0.0.1:{squatter} is in use by another program" in result.output


def test_no_maven(config_file: Path, bin_dir: Path) -> None:
    _script(bin_dir, "java", FAKE_JAVA)
    result = run(["start", "--only", "zookeeper", "--config", str(config_file)], bin_dir)
    assert result.exit_code == EXIT_STARTUP
    assert "Maven (mvn) is not on PATH" in result.output


def test_failed_download_shows_maven_output(config_file: Path, bin_dir: Path) -> None:
    _script(bin_dir, "java", FAKE_JAVA)
    _script(bin_dir, "mvn", FAKE_MVN)
    result = run(["start", "--only", "cassandra", "--config", str(config_file)], bin_dir)
    assert result.exit_code == EXIT_STARTUP
    assert "Maven failed (exit 1) fetching cassandra 5.0.5" in result.output
    assert "Could not resolve dependencies (fake)" in result.output


def test_server_dying_during_start_shows_log_tail(
    config_file: Path, bin_dir: Path, tmp_path: Path
) -> None:
    _script(bin_dir, "java", FAKE_JAVA)
    lib = tmp_path / "cache" / "services" / "zookeeper-3.9.5" / "lib"
    lib.mkdir(parents=True)
    (lib / "zookeeper-3.9.5.jar").write_bytes(b"")
    (lib.parent / "complete").write_text("fetched\n")
    result = run(["start", "--only", "zookeeper", "--config", str(config_file)], bin_dir)
    assert result.exit_code == EXIT_STARTUP
    assert "exited (status 1) while starting" in result.output
    assert "BindException: Address already in use" in result.output
    assert not (tmp_path / "var" / "zookeeper" / "zookeeper.pid").exists()


def test_status_json_and_stop_with_nothing_running(config_file: Path, bin_dir: Path) -> None:
    result = run(["status", "--json", "--config", str(config_file)], bin_dir)
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert set(status) == {"zookeeper", "cassandra"}
    for entry in status.values():
        assert entry["host"] == "127.0.0.1"
        assert isinstance(entry["port"], int)
        assert entry["running"] is False
        assert entry["pid"] is None
    result = run(["stop", "--config", str(config_file)], bin_dir)
    assert result.exit_code == 0
    assert "zookeeper: not running" in result.output


def test_invalid_configuration_names_the_key(tmp_path: Path, bin_dir: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[services.cassandra]\nheap_mb = 'lots'\n")
    result = run(["start", "--config", str(bad)], bin_dir)
    assert result.exit_code == EXIT_CONFIG
    assert "services.cassandra.heap_mb" in result.output
