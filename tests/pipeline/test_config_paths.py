"""Relative paths in a configuration file resolve against the file's directory, not the working
directory; flags and environment variables against the working directory; all come out absolute."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import config as config_module
from pipeline.config import PipelineConfig
from pipeline.services.config import load_services_config

CONF = Path(__file__).parents[2] / "conf"

# Every kind of path a configuration holds, each written relative.
EVERY_PATH = """
[journal]
dir = "data/journal"
[coordination]
state_dir = "data/consumers"
[services]
var_dir = "data/var"
cache_dir = "../cache"
[[consumers]]
name = "files"
sink = "files"
[consumers.files]
file_path = "./data/files"
[[consumers]]
name = "plugin"
sink = "cassandra"
[consumers.cassandra]
materializer = "access_log:AccessLogMaterializer"
plugin_path = "plugins"
"""


def paths_in(obj: Any, where: str = "config") -> Iterator[tuple[str, Path]]:
    """Every ``Path`` in a configuration, with where it sits."""
    if isinstance(obj, Path):
        yield where, obj
    elif isinstance(obj, tuple):
        for i, item in enumerate(obj):
            yield from paths_in(item, f"{where}[{i}]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for spec in dataclasses.fields(obj):
            yield from paths_in(getattr(obj, spec.name), f"{where}.{spec.name}")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the configuration's."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """The configuration's directory, with a copy of the example plugin beside the file."""
    directory = tmp_path / "etc"
    (directory / "plugins").mkdir(parents=True)
    plugin = (CONF / "plugins" / "access_log.py").read_text()
    (directory / "plugins" / "access_log.py").write_text(plugin)
    return directory


def test_paths_in_the_file_resolve_against_its_directory(elsewhere: Path, etc: Path) -> None:
    (etc / "p.toml").write_text(EVERY_PATH)
    config = config_module.load(Path("..") / "etc" / "p.toml", environ={})
    assert config.source == etc / "p.toml"
    assert config.journal.dir == etc / "data/journal"
    assert config.coordination.state_dir == etc / "data/consumers"
    assert config.services.var_dir == etc / "data/var"
    assert config.services.cache_dir == etc.parent / "cache"  # ".." folded as written
    files = config.group("files").files
    assert files is not None and files.file_path == etc / "data/files"
    plugin = config.group("plugin").cassandra
    # Imported at load (to check its options) from the file's directory, not the working one.
    assert plugin is not None and plugin.plugin_path == etc / "plugins"


def test_every_path_of_every_section_comes_out_absolute(elsewhere: Path, etc: Path) -> None:
    (etc / "p.toml").write_text(EVERY_PATH)
    config = config_module.load(etc / "p.toml", environ={})
    found = dict(paths_in(config))
    # A new Path field anywhere in the configuration is checked here too.
    assert len(found) >= 7, found  # the six above and the source file
    relative = {where: path for where, path in found.items() if not path.is_absolute()}
    assert not relative
    outside = {where: p for where, p in found.items() if etc not in p.parents and p != etc}
    assert set(outside) == {"config.services.cache_dir"}


def test_defaults_resolve_against_the_files_directory_too(elsewhere: Path, etc: Path) -> None:
    (etc / "p.toml").write_text('name = "only a name"\n')
    config = config_module.load(etc / "p.toml", environ={})
    defaults = PipelineConfig()
    assert config.journal.dir == etc / defaults.journal.dir
    assert config.coordination.state_dir == etc / defaults.coordination.state_dir
    assert config.services.var_dir == etc / defaults.services.var_dir


def test_flags_and_environment_resolve_against_the_working_directory(
    elsewhere: Path, etc: Path
) -> None:
    (etc / "p.toml").write_text(EVERY_PATH)
    config = config_module.load(
        etc / "p.toml",
        environ={
            "PIPELINE_COORDINATION__STATE_DIR": "env/consumers",
            "PIPELINE_SERVICES__VAR_DIR": '"env/var"',  # quoted TOML text too
        },
        overrides=config_module.flag_overrides(journal__dir=Path("flag/journal")),
    )
    assert config.journal.dir == elsewhere / "flag/journal"
    assert config.coordination.state_dir == elsewhere / "env/consumers"
    assert config.services.var_dir == elsewhere / "env/var"
    assert config.services.cache_dir == etc.parent / "cache"  # still the file's


def test_without_a_file_relative_paths_mean_the_working_directory(elsewhere: Path) -> None:
    config = config_module.load(None, environ={})
    assert config.journal.dir == elsewhere / "var/journal"
    assert all(path.is_absolute() for _, path in paths_in(config))


def test_services_commands_resolve_paths_the_same_way(elsewhere: Path, etc: Path) -> None:
    (etc / "p.toml").write_text(EVERY_PATH)
    assert load_services_config(etc / "p.toml", {}).var_dir == etc / "data/var"
    assert load_services_config(None, {}).var_dir == elsewhere / "var"
    from_env = load_services_config(etc / "p.toml", {"PIPELINE_SERVICES__VAR_DIR": "v"})
    assert from_env.var_dir == elsewhere / "v"


@pytest.mark.parametrize("name", ["events", "access_log", "forward", "latest", "mapping"])
def test_make_run_keeps_its_data_in_the_repositorys_var(elsewhere: Path, name: str) -> None:
    """``make run`` (any example as CONFIG) writes under the repository's git-ignored var/ and
    shares the ``make services`` servers' var/ and .cache/, wherever it is started from."""
    config = config_module.load(CONF / f"{name}.toml", environ={})
    root = CONF.parent
    assert config.journal.dir == root / "var" / "journal"
    assert config.coordination.state_dir == root / "var" / "consumers"
    assert (config.services.var_dir, config.services.cache_dir) == (root / "var", root / ".cache")
    for section in config.consumers:
        if section.files is not None:
            assert root / "var" in section.files.file_path.parents


def test_the_zookeeper_example_keeps_its_data_in_the_repositorys_var(elsewhere: Path) -> None:
    config = config_module.load(CONF / "zookeeper.toml", environ={})
    root = CONF.parent
    assert config.journal.dir == root / "var" / "journal"
    assert config.services.var_dir == root / "var"
    files = config.group("archive").files
    assert files is not None and files.file_path == root / "var" / "files"
