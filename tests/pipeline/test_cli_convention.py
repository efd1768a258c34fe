"""The CLI's one convention (``pipeline.cli.common``), held over the whole command tree."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.cli.common import EXIT_CODES, AddressParam, TimeParam

README = Path(__file__).resolve().parents[2] / "README.md"

# What each short flag means, wherever it appears.
SHORT_FLAGS = {
    "-c": "--category",
    "-p": "--partition",
    "-g": "--group",
    "-t": "--target",
    "-d": "--duration",
    "-b": "--batch",
    "-s": "--message-bytes",
    "-h": "--help",
}
# scribe_cat's ``-h host[:port]``: the one place where -h is not help.
SCRIBE_CAT_HOST = "pipeline cat"
DAEMONS = {"pipeline serve", "pipeline run", "pipeline consume"}
DESTRUCTIVE = {"pipeline journal repair", "pipeline offsets delete"}


def every_command() -> list[tuple[str, click.Command]]:
    """Every command of ``pipeline``, by its command line."""
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}", sub)
        else:
            found.append((prefix, command))

    walk("pipeline", main)
    return found


COMMANDS = every_command()


def options(command: click.Command) -> list[click.Option]:
    # ``command.params``, not ``get_params``: that would build (and click caches) the help
    # option for a context without the root's help names.
    return [p for p in command.params if isinstance(p, click.Option)]


def names(command: click.Command) -> set[str]:
    return {name for option in options(command) for name in option.opts}


def test_the_walk_reaches_every_group_and_command() -> None:
    lines = {line for line, _ in COMMANDS}
    assert {line.split()[1] for line in lines} >= set(main.commands)
    assert {"pipeline journal dump", "pipeline bench ingest", "pipeline services start"} <= lines


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_short_flag_means_one_thing(line: str, command: click.Command) -> None:
    for option in options(command):
        long_names = [n for n in option.opts + option.secondary_opts if n.startswith("--")]
        for short in (n for n in option.opts if re.fullmatch(r"-[a-zA-Z]", n)):
            if line == SCRIBE_CAT_HOST and short == "-h":
                assert "--target" in long_names
                continue
            assert short in SHORT_FLAGS, f"{line}: {short} is not in the convention"
            assert SHORT_FLAGS[short] in long_names, f"{line}: {short} is {long_names}"


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_command_takes_h_for_help_but_cat(line: str, command: click.Command) -> None:
    result = CliRunner().invoke(main, [*line.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    short = CliRunner().invoke(main, [*line.split()[1:], "-h"])
    if line == SCRIBE_CAT_HOST:
        assert short.exit_code == 2  # -h wants scribe_cat's host
    else:
        assert short.output == result.output


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_values_are_typed_alike(line: str, command: click.Command) -> None:
    for param in command.params:
        where = f"{line} {param.opts[0]}"
        assert param.type not in (click.INT, click.FLOAT), f"{where} has no range"
        if {"--target", "--cassandra", "--server"} & set(param.opts):
            assert isinstance(param.type, AddressParam), where
        timed = param.name is not None and param.name.endswith(("_time", "since", "until"))
        if isinstance(param, click.Option) and timed:
            assert isinstance(param.type, TimeParam), where
        if "--json" in param.opts:
            assert isinstance(param, click.Option) and param.is_flag, where


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_commands_that_read_a_journal_take_config_and_journal_dir(
    line: str, command: click.Command
) -> None:
    flags = names(command)
    if line.startswith("pipeline journal ") or "--journal-dir" in flags:
        assert {"--config", "--journal-dir"} <= flags, line


def test_daemons_take_the_log_options_and_destructive_commands_ask() -> None:
    by_line = dict(COMMANDS)
    for line in DAEMONS:
        assert {"--config", "--log-level", "--log-format"} <= names(by_line[line]), line
    for line in DESTRUCTIVE:
        assert "--yes" in names(by_line[line]), line


def test_exit_codes_are_in_the_root_help_and_the_readme() -> None:
    help_text = CliRunner().invoke(main, ["--help"]).output
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s+{re.escape(code)}\s+{re.escape(meaning)}$", help_text, re.M)
        assert f"| {code} |" in section, f"exit code {code} is not in the README"


def test_ctl_takes_the_target_or_scribe_ctrls_port_but_not_both() -> None:
    result = CliRunner().invoke(main, ["ctl", "status", "1464", "--target", "127.0.0.1:1465"])
    assert result.exit_code == 2
    assert "give the address once" in result.output


def test_journal_commands_find_the_journal_through_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "pipeline.toml"
    config.write_text('[journal]\ndir = "../elsewhere"\n')
    result = CliRunner().invoke(main, ["journal", "ls", "--config", str(config)])
    assert result.exit_code == 1
    assert f"no journal at {tmp_path / 'elsewhere'}" in result.output
    flag = CliRunner().invoke(
        main, ["journal", "ls", "--config", str(config), "--journal-dir", str(tmp_path / "j")]
    )
    assert f"no journal at {tmp_path / 'j'}" in flag.output


def test_an_invalid_configuration_is_one_error_line_and_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text("[server]\nport = 99999\n")
    result = CliRunner().invoke(main, ["journal", "ls", "--config", str(config)])
    assert result.exit_code == 78
    [line] = result.output.splitlines()
    assert line.startswith("Error: invalid configuration: ") and "server.port" in line
