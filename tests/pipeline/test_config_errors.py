"""Error wording, fixed in the error types: each message names its key (or file, or peer) once,
says where a value came from when not from the file, and never shows Python's own errors."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from journal import JournalLocked
from pipeline import config as config_module
from pipeline.cli.tools import ctl_command
from pipeline.errors import ConfigError, ConfigFileError, StartupError, describe
from scribe_compat import TransportError


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    config_module.load(path, environ=environ or {})


def test_a_required_key_left_out_is_named_not_a_python_argument_error(tmp_path: Path) -> None:
    text = '[[consumers]]\ncategories = ["*"]\nsink = "files"\n[consumers.files]\nfile_path = "f"\n'
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert info.value.key == "consumers[0].name"
    assert "required" in info.value.problem
    assert "__init__" not in str(info.value) and "positional" not in str(info.value)


def test_a_port_out_of_range_is_blamed_on_the_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "[server]\nport = 99999\n")
    assert info.value.key == "server.port"


def test_a_missing_file_is_called_a_file_not_a_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigFileError) as info:
        config_module.load(missing, environ={})
    assert str(info.value) == f"configuration file {str(missing)!r}: file not found"
    assert "key" not in str(info.value)


def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read it"):
        config_module.load(tmp_path, environ={})  # a directory


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("PIPELINE_SERVER__PORTX", "3", "server.portx"),
        ("PIPELINE_SERVER__PORT", "abc", "server.port"),
        ("PIPELINE_JOURNAL__DURABILITY", "sometimes", "journal.durability"),
        ("PIPELINE_NOSUCH__KEY", "1", "nosuch"),
    ],
)
def test_a_bad_environment_variable_is_named_as_such(
    tmp_path: Path, variable: str, value: str, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "", {variable: value})
    assert info.value.key == key
    assert info.value.source is not None and variable in info.value.source
    assert f"(from environment variable {variable}" in str(info.value)


def test_a_bad_key_in_the_file_names_no_other_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "[server]\nportx = 1\n", {"PIPELINE_SERVER__PORT": "1464"})
    assert info.value.source is None
    assert "environment" not in str(info.value)


def test_a_bad_flag_is_named_as_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_module.load(
            None,
            environ={"PIPELINE_SERVER__PORT": "1464"},
            overrides=config_module.flag_overrides(server__port=99999),
        )
    assert info.value.source == "the command line"


def test_wrappers_say_their_subject_once() -> None:
    peer = "127.0.0.1:1499"
    connect = TransportError("connect failed: [Errno 111] Connection refused", peer)
    assert describe(peer, connect) == f"{peer}: connect failed: [Errno 111] Connection refused"
    assert describe(peer, TransportError("closed")) == f"{peer}: closed"  # no peer of its own
    locked = StartupError(JournalLocked(Path("var/journal")), "journal var/journal")
    assert str(locked) == "journal var/journal: the journal is in use by another process"
    assert locked.reason == "the journal is in use by another process"
    missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/j")
    assert str(StartupError(missing, "journal /j")) == "journal /j: No such file or directory"
    other = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/j/a/0")
    assert describe("journal /j", other) == "journal /j: No such file or directory: /j/a/0"
    assert str(StartupError("plain words")) == "plain words"


def test_ctl_names_the_server_once() -> None:
    with socket.socket() as sock:  # bound, never listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = CliRunner().invoke(ctl_command, ["counters", str(port)])
    assert result.exit_code == 1
    assert result.output.count(f"127.0.0.1:{port}") == 1, result.output
