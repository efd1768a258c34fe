"""The configuration: the example file documents the defaults; every error names its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from consumers import FileSinkConfig, ForwardSinkConfig, GroupConfig
from consumers.sinks.cassandra import EventsOptions
from pipeline import config as config_module
from pipeline import settings
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.errors import ConfigError
from pipeline.routing import RouteConfig

EXAMPLE = Path(__file__).parents[2] / "conf" / "pipeline.toml"
CASSANDRA_GROUP = '[[consumers]]\nname = "g"\nsink = "cassandra"\n[consumers.cassandra]\n'


def without_source(config: PipelineConfig) -> PipelineConfig:
    return dataclasses.replace(config, source=None)


def test_example_file_holds_exactly_the_defaults() -> None:
    loaded = config_module.load(EXAMPLE, environ={})
    # Relative paths, written or default, resolve against the file's directory alike.
    assert without_source(loaded) == settings.resolve_paths(PipelineConfig(), EXAMPLE.parent)


def test_example_file_names_every_key_of_every_section() -> None:
    data = config_module.read_file(EXAMPLE)
    text = EXAMPLE.read_text()
    defaults = PipelineConfig()
    for section in ("server", "admission", "log", "fb303"):
        table = getattr(defaults, section)
        fields = {f.name for f in dataclasses.fields(table) if getattr(table, f.name) is not None}
        assert fields <= set(data[section]), section
        # A key whose default is unset cannot be written in TOML: it is shown commented out.
        for unset in {f.name for f in dataclasses.fields(table)} - fields:
            assert f"\n# {unset} = " in text, unset
    journal_fields = {f.name for f in dataclasses.fields(defaults.journal.settings)}
    journal_fields |= {"dir", "retention_check_interval_s", "retention_respects_consumers"}
    assert journal_fields <= set(data["journal"])
    assert {f.name for f in dataclasses.fields(defaults.server.limits)} <= set(
        data["server"]["limits"]
    )
    for service in ("zookeeper", "cassandra"):
        fields = {f.name for f in dataclasses.fields(getattr(defaults.services, service))}
        assert fields <= set(data["services"][service]), service


def example_consumer_groups() -> str:
    """The example's commented-out ``[[consumers]]`` tables, with their "# " removed: lines
    that are a table header or a key; "# # key = ..." (unset) and annotations stay out."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Consumer groups:"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("["))
    keys = re.compile(r"# (\[|[a-z_]+ = )")
    return "\n".join(line[2:] for line in lines[start:end] if keys.match(line)) + "\n"


def test_example_consumer_groups_hold_the_defaults_of_every_key(tmp_path: Path) -> None:
    text = example_consumer_groups()
    path = tmp_path / "groups.toml"
    path.write_text(text)
    loaded = config_module.load(path, environ={})
    sections = {section.group.sink: section for section in loaded.consumers}
    assert set(sections) == {"files", "forward"}
    files, forward = sections["files"], sections["forward"]
    assert files.files is not None
    assert forward.forward is not None
    # Every value is the default but the name, the sink and the sink's required key.
    assert files.group == GroupConfig(files.name, sink="files")
    assert forward.group == GroupConfig(forward.name, sink="forward")
    assert files.files == FileSinkConfig(file_path=files.files.file_path)
    assert forward.forward == ForwardSinkConfig(host=forward.forward.host)
    default_embedded = ConsumerSection(files.group).embedded
    assert files.embedded == forward.embedded == default_embedded
    # Every key is written, or shown commented out when its default is unset.
    tables = {table["sink"]: table for table in config_module.read_file(path)["consumers"]}
    group_keys = {f.name for f in dataclasses.fields(GroupConfig)} | {"embedded"}
    full = EXAMPLE.read_text()
    for sink, cls in (("files", FileSinkConfig), ("forward", ForwardSinkConfig)):
        assert group_keys <= set(tables[sink]), sink
        sink_fields = dataclasses.fields(cls)
        unset = {f.name for f in sink_fields if f.default is None}
        assert {f.name for f in sink_fields} - unset <= set(tables[sink][sink]), sink
        for name in unset:
            assert f"\n# # {name} = " in full, name
    # Cassandra groups are referred to the examples that have them.
    for example in ("events", "latest", "mapping", "access_log"):
        assert f"conf/{example}.toml" in full
        assert (EXAMPLE.parent / f"{example}.toml").is_file()


def test_precedence_flags_over_environment_over_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[server]\nport = 2000\nhost = "127.0.0.2"\n[journal]\ndir = "/j"\n')
    env = {"PIPELINE_SERVER__PORT": "3000", "PIPELINE_JOURNAL__DURABILITY": "interval"}
    config = config_module.load(
        path, environ=env, overrides=config_module.flag_overrides(server__port=4000)
    )
    assert config.server.port == 4000
    assert config.server.host == "127.0.0.2"
    assert config.journal.dir == Path("/j")
    assert config.journal.settings.durability.value == "interval"
    assert config.source == path


def test_routes_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[routing.routes]]\ncategory = "app*"\npartitions = 4\npartitioner = "key-hash"\n'
        '[[routing.routes]]\ncategory = "default"\n'
    )
    config = config_module.load(path, environ={})
    assert config.routing.routes[0] == RouteConfig(
        "app*", partitions=4, partitioner=config.routing.routes[0].partitioner
    )
    assert config.routing.routes[0].partitioner.value == "key-hash"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "x"\n', "server.port"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server.limits]\nmax_frame_bytes = 0\n", "server.limits.max_frame_bytes"),
        ('[journal]\ndurability = "sometimes"\n', "journal.durability"),
        ("[journal]\nsegment_bytes = -1\n", "journal.segment_bytes"),
        ("[nope]\n", "nope"),
        ('[routing]\nroutes = [{category = "a*b"}]\n', "routing.routes[0]"),
        ("[admission]\nmax_pending_bytes = true\n", "admission.max_pending_bytes"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ('[cassandra]\nconsistency = "SOME"\n', "cassandra.consistency"),
        ("[cassandra]\nmax_in_flight = 0\n", "cassandra.max_in_flight"),
        (
            '[cassandra.replication]\nstrategy = "NetworkTopologyStrategy"\n',
            "cassandra.replication",
        ),
        (CASSANDRA_GROUP + 'materializer = "nope"\n', "consumers[0].cassandra.materializer"),
        # A required key left out is named as such, not as Python's __init__ error.
        (CASSANDRA_GROUP + 'materializer = "mapping"\n', "consumers[0].cassandra.table"),
        (CASSANDRA_GROUP + 'materializer = "latest"\n', "consumers[0].cassandra.key_field"),
        (CASSANDRA_GROUP + "bucket_s = 0\n", "consumers[0].cassandra.bucket_s"),
        (CASSANDRA_GROUP + "colour = 1\n", "consumers[0].cassandra.colour"),
        (
            CASSANDRA_GROUP + 'materializer = "no.such:Plugin"\n',
            "consumers[0].cassandra.materializer",
        ),
        (CASSANDRA_GROUP.replace("[consumers.cassandra]\n", ""), "consumers[0].cassandra"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_module.load(path, environ={})
    assert info.value.key == key


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config_module.load(bad, environ={})
    with pytest.raises(ConfigError, match="file not found"):
        config_module.load(tmp_path / "missing.toml", environ={})


def test_example_file_names_every_coordination_key() -> None:
    data = config_module.read_file(EXAMPLE)
    defaults = PipelineConfig().coordination
    assert {f.name for f in dataclasses.fields(defaults)} <= set(data["coordination"])
    zookeeper = {f.name for f in dataclasses.fields(defaults.zookeeper)} - {"auth_digest"}
    assert zookeeper <= set(data["coordination"]["zookeeper"])


def test_example_file_names_every_cassandra_key() -> None:
    data = config_module.read_file(EXAMPLE)
    defaults = PipelineConfig().cassandra
    optional = {"username", "password"}  # shown commented out: no login by default
    assert {f.name for f in dataclasses.fields(defaults)} - optional <= set(data["cassandra"])
    replication = {f.name for f in dataclasses.fields(defaults.replication)}
    assert replication <= set(data["cassandra"]["replication"])


def test_cassandra_examples_load_with_their_materializers() -> None:
    events = config_module.load(EXAMPLE.with_name("events.toml"), environ={})
    section = events.group("events")
    assert section.cassandra is not None
    assert section.cassandra.materializer == "events"
    assert section.cassandra.options == EventsOptions()
    mapping = config_module.load(EXAMPLE.with_name("mapping.toml"), environ={}).group("logins")
    assert mapping.cassandra is not None
    assert mapping.cassandra.options.columns["user_id"] == "user.id"
    plugin = config_module.load(EXAMPLE.with_name("access_log.toml"), environ={})
    options = plugin.group("access-log").cassandra
    assert options is not None and options.options == {"table": "http_requests", "bucket_s": 3600}


def test_zookeeper_example_configuration_loads() -> None:
    config = config_module.load(EXAMPLE.with_name("zookeeper.toml"), environ={})
    assert config.coordination.kind.value == "zookeeper"
    assert config.coordination.zookeeper.chroot == "/scribe-pipeline"
    assert [s.group.sink for s in config.consumers] == ["files"]


@pytest.mark.parametrize("path", sorted(EXAMPLE.parent.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_configuration_loads(path: Path) -> None:
    config = config_module.load(path, environ={})
    for section in config.consumers:
        assert getattr(section, section.group.sink) is not None
