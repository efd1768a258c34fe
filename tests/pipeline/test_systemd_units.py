"""The systemd units in conf/systemd/: their ExecStart= is a command line ``pipeline`` accepts,
the directives that make readiness, reload, stop, restart and hardening work are there, and
``systemd-analyze verify`` finds nothing to say about them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from pipeline.cli import main
from pipeline.cli.common import EXIT_CONFIG
from pipeline.config import from_mapping
from pipeline.descriptors import DescriptorLimit, check_limit

UNITS = Path(__file__).parents[2] / "conf" / "systemd"
SERVER_UNITS = {"scribe-pipeline.service": "run", "scribe-pipeline-serve.service": "serve"}
CONSUMER_TEMPLATE = "scribe-pipeline-consumer@.service"
ALL_UNITS = [*SERVER_UNITS, CONSUMER_TEMPLATE]
CONFIG = Path("/etc/scribe-pipeline/pipeline.toml")
INSTANCE = "events"


@dataclass
class Unit:
    """A unit file's assignments by section; a key given twice keeps both values, in order."""

    name: str
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def value(self, section: str, key: str) -> str:
        values = self.values(section, key)
        assert len(values) == 1, f"{self.name}: [{section}] {key}= is set {len(values)} times"
        return values[0]


def parse_unit(path: Path) -> Unit:
    unit = Unit(path.name)
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        # This parser does not join continued lines, and the units do not need them.
        assert not line.endswith("\\"), f"{path.name}:{number}: a continued line"
        if line.startswith("[") and line.endswith("]"):
            section = unit.sections.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}:{number}: an assignment before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not an assignment: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def exec_start(unit: Unit) -> list[str]:
    """ExecStart= as the daemon's argv, the template's instance given as INSTANCE."""
    return shlex.split(unit.value("Service", "ExecStart").replace("%I", INSTANCE))


def click_params(argv: list[str]) -> tuple[str, dict[str, object]]:
    """Parse ``pipeline``'s arguments as the CLI does, without running the command (the units
    give no options before the command's name)."""
    with click.Context(main, info_name="pipeline") as parent:
        command = main.get_command(parent, argv[0])
        assert command is not None, f"no command {argv[0]!r}"
        with command.make_context(argv[0], argv[1:], parent=parent) as context:
            return argv[0], context.params


@pytest.fixture(params=ALL_UNITS)
def unit(request: pytest.FixtureRequest) -> Unit:
    return parse_unit(UNITS / request.param)


def test_exec_start_is_a_command_line_pipeline_accepts(unit: Unit) -> None:
    argv = exec_start(unit)
    assert Path(argv[0]).name == "pipeline" and Path(argv[0]).is_absolute()
    command, params = click_params(argv[1:])
    assert params["config_path"] == CONFIG
    if unit.name in SERVER_UNITS:
        assert command == SERVER_UNITS[unit.name]
    else:
        assert command == "consume"
        assert params["group_name"] == INSTANCE


def test_a_bad_exec_start_would_be_caught() -> None:
    # The check above parses for real: an option the command does not take is refused.
    with pytest.raises(click.UsageError, match="--group"):
        click_params(["serve", "--config", str(CONFIG), "--group", INSTANCE])


def test_readiness_stop_and_restart(unit: Unit) -> None:
    assert unit.value("Service", "Type") == "notify"
    assert unit.value("Service", "NotifyAccess") == "main"
    assert unit.value("Service", "KillSignal") == "SIGTERM"
    # A drain takes up to drain_timeout_s for calls in progress, then the last fsync and commits.
    drain_s = from_mapping({}).server.drain_timeout_s
    assert int(unit.value("Service", "TimeoutStopSec")) >= 3 * drain_s
    assert unit.value("Service", "Restart") == "on-failure"
    assert str(EXIT_CONFIG) in unit.value("Service", "RestartPreventExitStatus").split()
    assert int(unit.value("Service", "WatchdogSec")) > 0
    assert unit.value("Install", "WantedBy") == "multi-user.target"


def test_server_units_reload_on_sighup_and_exclude_each_other() -> None:
    for name in SERVER_UNITS:
        server = parse_unit(UNITS / name)
        assert server.value("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
        (other,) = set(SERVER_UNITS) - {name}
        assert server.value("Unit", "Conflicts") == other


def test_a_consumer_member_has_no_reload_and_starts_after_the_server() -> None:
    consumer = parse_unit(UNITS / CONSUMER_TEMPLATE)
    # A member ignores SIGHUP: "systemctl reload" would claim a change that did not happen.
    assert consumer.values("Service", "ExecReload") == []
    assert set(SERVER_UNITS) <= set(consumer.value("Unit", "After").split())


def test_hardening(unit: Unit) -> None:
    service = "Service"
    assert unit.value(service, "User") == unit.value(service, "Group") == "scribe-pipeline"
    assert unit.value(service, "DynamicUser") == "no"
    assert unit.value(service, "ProtectSystem") == "strict"
    state = f"/var/lib/{unit.value(service, 'StateDirectory')}"
    assert state in unit.value(service, "ReadWritePaths").split()  # the journal lives there
    assert unit.value(service, "LogsDirectory") == "scribe-pipeline"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices"):
        assert unit.value(service, key) == "yes", key
    assert unit.value(service, "CapabilityBoundingSet") == ""
    assert unit.value(service, "AmbientCapabilities") == ""
    assert set(unit.value(service, "RestrictAddressFamilies").split()) == {
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
    }
    assert unit.values(service, "SystemCallFilter")[0] == "@system-service"


def test_the_descriptor_limit_fits_the_default_configuration(unit: Unit) -> None:
    limit = int(unit.value("Service", "LimitNOFILE"))
    journal = from_mapping({}).journal
    granted = DescriptorLimit(soft=limit, hard=limit, raised_from=None)
    assert (
        check_limit(granted, journal.settings.max_open_partitions, journal.min_free_descriptors)
        is None
    )
    assert limit > 1024  # more than the soft limit a service gets by default


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze not found (Debian: apt-get install systemd)"
    # verify checks that ExecStart='s program exists: point it at this virtualenv's.
    installed = Path(sys.executable).parent / "pipeline"
    assert installed.exists()
    for name in ALL_UNITS:
        text = (UNITS / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/opt/scribe-pipeline/bin/pipeline", str(installed))
        )
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in ALL_UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and values that do not parse are warnings (exit 0): any output is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
