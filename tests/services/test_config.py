"""pipeline.services.config: defaults, TOML tables, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.services.config import (
    ServicesConfig,
    load_services_config,
    services_config_from_mapping,
)


def test_defaults() -> None:
    config = services_config_from_mapping({})
    assert config == ServicesConfig()
    assert config.zookeeper.address == "127.0.0.1:2181"
    assert config.cassandra.address == "127.0.0.1:9042"
    assert config.cassandra.heap_mb == 2048
    assert (config.var_dir, config.cache_dir) == (Path("var"), Path(".cache"))


def test_tables_override_defaults() -> None:
    config = services_config_from_mapping(
        {
            "var_dir": "/tmp/v",
            "zookeeper": {"port": 2182, "enabled": False},
            "cassandra": {"port": 9043, "storage_port": 7001, "heap_mb": 512},
        }
    )
    assert config.var_dir == Path("/tmp/v")
    assert (config.zookeeper.port, config.zookeeper.enabled) == (2182, False)
    assert (config.cassandra.port, config.cassandra.storage_port) == (9043, 7001)
    assert config.cassandra.heap_mb == 512


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"zookeeper": {"prot": 1}}, "services.zookeeper.prot", "unknown key"),
        ({"cassandra": {"port": "9042"}}, "services.cassandra.port", "expected an integer"),
        ({"cassandra": {"port": 70000}}, "services.cassandra.port", "<= 65535"),
        ({"cassandra": {"host": "localhost"}}, "services.cassandra.host", "IP address"),
        ({"cassandra": {"version": "6.0.0"}}, "services.cassandra.version", "5.0.x"),
        ({"zookeeper": {"version": "3.7.2"}}, "services.zookeeper.version", "3.8 or newer"),
        ({"cassandra": {"authenticator": "Nope"}}, "services.cassandra.authenticator", "one of"),
        ({"zookeeper": []}, "services.zookeeper", "expected a table"),
        ({"var_dir": 3}, "services.var_dir", "path"),
        ({"elasticsearch": {}}, "services.elasticsearch", "unknown key"),
    ],
)
def test_invalid_values_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        services_config_from_mapping(data)
    assert err.value.key == key
    assert problem in err.value.problem


def test_file_then_environment(tmp_path: Path) -> None:
    toml = tmp_path / "pipeline.toml"
    toml.write_text("[services.zookeeper]\nport = 2190\n[services.cassandra]\nport = 9050\n")
    config = load_services_config(toml, {"PIPELINE_SERVICES__CASSANDRA__PORT": "9051"})
    assert (config.zookeeper.port, config.cassandra.port) == (2190, 9051)


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_services_config(tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[services\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_services_config(bad, {})
