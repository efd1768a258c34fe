"""Ensembles and clusters in `pipeline services`, without starting servers: their settings,
each member's addresses, folders and rendered configuration, and `--member` on the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.services import services
from pipeline.errors import ConfigError
from pipeline.services.cassandra import ManagedCassandra
from pipeline.services.config import (
    ServicesConfig,
    load_services_config,
    services_config_from_mapping,
)
from pipeline.services.members import members
from pipeline.services.zookeeper import ManagedZooKeeper

CLUSTER_TOML = Path(__file__).parents[2] / "conf" / "services" / "cluster.toml"


def ensemble(tmp_path: Path, **zookeeper: object) -> ServicesConfig:
    return services_config_from_mapping(
        {"var_dir": str(tmp_path), "zookeeper": {"servers": 3, "port": 2281, **zookeeper}}
    )


def test_single_servers_keep_their_folders_and_addresses(tmp_path: Path) -> None:
    config = services_config_from_mapping({"var_dir": str(tmp_path)})
    (zk,) = members(config, "zookeeper")
    (node,) = members(config, "cassandra")
    assert (zk.label, zk.home, zk.address) == (
        "zookeeper",
        tmp_path / "zookeeper",
        "127.0.0.1:2181",
    )
    assert (node.label, node.home, node.address) == (
        "cassandra",
        tmp_path / "cassandra",
        "127.0.0.1:9042",
    )
    assert zk.extra_ports() == []
    assert config.zookeeper.hosts == "127.0.0.1:2181"


def test_ensemble_members_have_their_own_ports_folders_and_myid(tmp_path: Path) -> None:
    config = ensemble(tmp_path, quorum_port=2981, election_port=3981)
    servers = members(config, "zookeeper")
    assert [s.label for s in servers] == ["zookeeper-1", "zookeeper-2", "zookeeper-3"]
    assert [s.address for s in servers] == ["127.0.0.1:2281", "127.0.0.1:2282", "127.0.0.1:2283"]
    assert config.zookeeper.hosts == "127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283"
    second = servers[1]
    assert isinstance(second, ManagedZooKeeper)
    assert second.extra_ports() == [2982, 3982]
    second.prepare()
    assert (second.home / "data" / "myid").read_text() == "2\n"
    rendered = (second.home / "zoo.cfg").read_text().splitlines()
    assert "clientPort=2282" in rendered
    assert f"dataDir={tmp_path / 'zookeeper-2'}/data" in rendered
    servers_lines = [line for line in rendered if line.startswith("server.")]
    assert servers_lines == [
        "server.1=127.0.0.1:2981:3981",
        "server.2=127.0.0.1:2982:3982",
        "server.3=127.0.0.1:2983:3983",
    ]
    assert "initLimit=10" in rendered


def test_standalone_configuration_has_no_ensemble(tmp_path: Path) -> None:
    config = services_config_from_mapping({"var_dir": str(tmp_path)})
    (zk,) = members(config, "zookeeper")
    zk.prepare()
    text = (zk.home / "zoo.cfg").read_text()
    assert "server.1" not in text
    assert not (zk.home / "data" / "myid").exists()


def test_cluster_nodes_on_consecutive_loopback_addresses_with_even_tokens(tmp_path: Path) -> None:
    config = services_config_from_mapping(
        {"var_dir": str(tmp_path), "cassandra": {"nodes": 3, "host": "127.0.0.2"}}
    )
    nodes = members(config, "cassandra")
    assert [n.address for n in nodes] == ["127.0.0.2:9042", "127.0.0.3:9042", "127.0.0.4:9042"]
    assert [n.home.name for n in nodes] == ["cassandra-1", "cassandra-2", "cassandra-3"]
    assert config.cassandra.hosts == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    tokens = [n.initial_token() for n in nodes if isinstance(n, ManagedCassandra)]
    assert tokens[0] == -(2**63)
    steps = {b - a for a, b in itertools.pairwise(tokens)}
    # Equal shares, the last one (up to the ring's end and round to the first token) included.
    (step,) = steps
    assert 0 <= 2**64 - 3 * step < 3
    assert [n.extra_ports() for n in nodes] == [[7000]] * 3


def test_one_member_by_number(tmp_path: Path) -> None:
    config = ensemble(tmp_path)
    (picked,) = members(config, "zookeeper", 3)
    assert picked.label == "zookeeper-3"
    with pytest.raises(ValueError, match="members 1 to 3, not 4"):
        members(config, "zookeeper", 4)


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"zookeeper": {"servers": 8}}, "services.zookeeper.servers", "<= 7"),
        ({"zookeeper": {"servers": 0}}, "services.zookeeper.servers", ">= 1"),
        (
            {"zookeeper": {"servers": 3, "port": 2181, "quorum_port": 2183}},
            "services.zookeeper.quorum_port",
            "overlap",
        ),
        ({"zookeeper": {"servers": 3, "port": 65534}}, "services.zookeeper.port", "65535"),
        ({"cassandra": {"nodes": 6}}, "services.cassandra.nodes", "<= 5"),
        ({"cassandra": {"nodes": 2, "host": "10.0.0.1"}}, "services.cassandra.host", "loopback"),
        (
            {"cassandra": {"nodes": 2, "host": "127.255.255.255"}},
            "services.cassandra.host",
            "loopback",
        ),
    ],
)
def test_invalid_members_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        services_config_from_mapping(data)
    assert err.value.key == key
    assert problem in err.value.problem


def test_the_cluster_file_asks_for_three_servers_and_two_nodes_apart_from_the_defaults() -> None:
    config = load_services_config(CLUSTER_TOML, {})
    default = ServicesConfig()
    assert config.zookeeper.servers == 3
    assert config.cassandra.nodes == 2
    assert config.cassandra.heap_mb == 1024
    assert config.var_dir == CLUSTER_TOML.parents[2] / "var" / "cluster"
    ports = {config.zookeeper.client_port(n) for n in config.zookeeper.members}
    assert default.zookeeper.port not in ports
    assert default.cassandra.host not in config.cassandra.hosts


def test_cli_member_needs_only_and_a_member_that_exists(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(services, ["stop", "--member", "2", "--config", str(CLUSTER_TOML)])
    assert result.exit_code == 2  # usage
    assert "--member needs --only" in result.output
    result = runner.invoke(
        services,
        ["stop", "--only", "cassandra", "--member", "3", "--config", str(CLUSTER_TOML)],
    )
    assert result.exit_code == 2  # usage
    assert "cassandra has members 1 to 2, not 3" in result.output


def test_cli_status_lists_every_member(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[services]\nvar_dir = "{tmp_path}"\n'
        # Ports and addresses nothing on this machine listens on.
        "[services.zookeeper]\nservers = 3\nport = 24181\nquorum_port = 24281\n"
        "election_port = 24381\n"
        '[services.cassandra]\nnodes = 2\nhost = "127.0.0.12"\nport = 24042\n'
    )
    runner = CliRunner()
    result = runner.invoke(services, ["status", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "zookeeper: 0 of 3 members running"
    assert "  zookeeper-2: stopped on 127.0.0.1:24182" in lines
    assert "  cassandra-2: stopped on 127.0.0.13:24042" in lines
    result = runner.invoke(services, ["status", "--json", "--config", str(path)])
    status = json.loads(result.stdout)
    assert [m["name"] for m in status["cassandra"]["members"]] == ["cassandra-1", "cassandra-2"]
    assert [m["port"] for m in status["zookeeper"]["members"]] == [24181, 24182, 24183]
    assert status["zookeeper"]["running"] is False
    result = runner.invoke(
        services, ["stop", "--only", "zookeeper", "--member", "2", "--config", str(path)]
    )
    assert result.exit_code == 0
    assert result.output == "zookeeper-2: not running (nothing to stop)\n"
