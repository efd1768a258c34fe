"""scribe.conf onto the pipeline's configuration: routes, groups, and a verdict per key."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.config import from_mapping
from pipeline.scribe_conf import dumps, import_scribe, parse

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "scribe_conf"
# Which goldens can be honoured safely (exit 0) and which cannot (exit 1).
EXPECTED_EXIT = {
    "central_files.conf": 0,
    "leaf_buffer_network.conf": 0,
    "bucket_files.conf": 0,
    "multi_prefix.conf": 0,
    "null_default_forward.conf": 0,
    "unsupported_hdfs.conf": 1,
}


def imported(text: str) -> tuple[dict[str, Any], list[str], bool]:
    result = import_scribe(parse(text))
    tree = tomllib.loads(dumps(result.tree))
    return tree, result.report.lines(), result.report.cannot_honour


def test_every_golden_file_is_covered() -> None:
    assert {p.name for p in GOLDEN.glob("*.conf")} == set(EXPECTED_EXIT)


@pytest.mark.parametrize("name", sorted(EXPECTED_EXIT))
def test_each_golden_imports_into_a_configuration_that_loads(name: str) -> None:
    text = (GOLDEN / name).read_text()
    tree, lines, fatal = imported(text)
    config = from_mapping(tree)
    assert fatal == bool(EXPECTED_EXIT[name])
    # One line per setting of the file, in line order, each with its verdict.
    settings = [n for n, line in enumerate(text.split("\n"), 1) if "=" in line.split("#")[0]]
    assert [int(line.split(":")[0].removeprefix("line ")) for line in lines] == settings
    for line in lines:
        assert any(v in line for v in (": mapped to ", ": ignored: ", ": unsupported: "))
    assert config.routing.routes


def test_the_leaf_forwards_every_category_through_the_journal() -> None:
    tree, _, _ = imported((GOLDEN / "leaf_buffer_network.conf").read_text())
    config = from_mapping(tree)
    assert [r.category for r in config.routing.routes] == ["default"]
    [group] = config.consumers
    assert group.group.categories == ("*",) and group.forward is not None
    assert (group.forward.host, group.forward.port, group.forward.timeout_s) == (
        "localhost",
        1463,
        3.0,
    )
    assert (group.group.batch_bytes, group.group.batch_wait_s) == (20480, 1.0)
    assert config.server.port == 1464


BUFFER_RETRIES = """
<store>
category=default
type=buffer
adaptive_backoff=yes
{retries}
<primary>
type=network
remote_host=up.example
remote_port=1463
</primary>
</store>
"""


@pytest.mark.parametrize(
    ("retries", "backoff"),
    [
        # A first delay over the default longest (30 s) raises the longest to it.
        ("min_retry_interval=60", (60.0, 60.0)),
        # A first delay over the longest given: the longest given wins.
        ("min_retry_interval=60\nmax_retry_interval=20", (20.0, 20.0)),
        ("min_retry_interval=5\nmax_retry_interval=20", (5.0, 20.0)),
    ],
)
def test_buffer_retry_intervals_become_a_backoff_that_loads(
    retries: str, backoff: tuple[float, float]
) -> None:
    tree, _, fatal = imported(BUFFER_RETRIES.format(retries=retries))
    [section] = from_mapping(tree).consumers
    assert (section.group.backoff_initial_s, section.group.backoff_max_s) == backoff
    assert not fatal


def test_a_bucket_store_becomes_key_hash_partitions_and_says_what_is_lost() -> None:
    tree, lines, fatal = imported((GOLDEN / "bucket_files.conf").read_text())
    config = from_mapping(tree)
    route = next(r for r in config.routing.routes if r.category == "bucket_me")
    assert (route.partitions, route.partitioner.value, route.key_delimiter) == (5, "key-hash", ":")
    assert not fatal
    assert any("bucket_subdir=bucket: unsupported" in line and "NNN" in line for line in lines)


def test_an_exact_store_whose_directory_is_its_category_keeps_scribes_layout() -> None:
    tree, _, _ = imported((GOLDEN / "bucket_files.conf").read_text())
    audit = next(g for g in tree["consumers"] if g["categories"] == ["audit"])
    # Scribe wrote /tmp/scribetest/audit/audit_NNNNN; so does a files sink at /tmp/scribetest.
    assert audit["files"]["file_path"] == "/tmp/scribetest"


def test_a_default_store_that_forwards_reads_only_what_no_other_store_takes() -> None:
    tree, _, fatal = imported((GOLDEN / "null_default_forward.conf").read_text())
    config = from_mapping(tree)
    assert config.routing.unroutable.value == "journal"
    default = next(s for s in config.consumers if s.forward is not None)
    assert default.group.categories == (config.routing.catch_all_category,)
    discards = [r for r in config.routing.routes if r.target is not None]
    assert {r.category for r in discards} == {"noise", "debug*"}
    assert not fatal


def test_prefixes_say_when_the_longest_wins_where_scribe_took_the_first() -> None:
    text = """
<store>
category=a*
type=file
file_path=/x
</store>
<store>
category=ab*
type=file
file_path=/y
</store>
"""
    _, lines, fatal = imported(text)
    notes = [line for line in lines if "category=" in line]
    assert all("the longest prefix wins" in line for line in notes), notes
    assert not fatal


def test_a_default_file_store_beside_a_null_store_cannot_be_honoured() -> None:
    text = """
<store>
category=ignore*
type=null
</store>
<store>
category=keep
type=file
file_path=/k
</store>
<store>
category=default
type=file
file_path=/all
</store>
"""
    tree, lines, fatal = imported(text)
    assert fatal
    assert any("ignore*: unsupported" in line and "would write these" in line for line in lines)
    assert any("also reads 'keep'" in line for line in lines)
    from_mapping(tree)


def test_buckets_of_different_upstreams_cannot_be_honoured() -> None:
    buckets = "".join(
        f"<bucket{i}>\ntype=network\nremote_host=h{i}\nremote_port=1463\n</bucket{i}>\n"
        for i in range(3)
    )
    head = "<store>\ncategory=c\ntype=bucket\nnum_buckets=2\nbucket_type=key_hash\n"
    text = f"{head}{buckets}</store>\n"
    tree, lines, fatal = imported(text)
    assert fatal
    assert "consumers" not in tree
    assert any("its buckets are different stores" in line for line in lines)


@pytest.mark.parametrize(
    ("store", "why"),
    [
        ("type=thriftfile\nfile_path=/t", "Thrift-framed"),
        ("type=network\nremote_host=h", "no remote_port"),
        (
            "type=buffer\n<primary>\ntype=network\nremote_host=h\nremote_port=1\n</primary>\n"
            "<secondary>\ntype=file\n</secondary>\n<x>\n</x>",
            None,
        ),
        (
            "type=bucket\nnum_buckets=2\nremove_key=yes\nbucket_type=key_hash\n<bucket>\ntype=file"
            "\nfile_path=/b\n</bucket>",
            "delivered whole",
        ),
    ],
)
def test_store_types_and_options_that_cannot_be_honoured(store: str, why: str | None) -> None:
    _, lines, fatal = imported(f"<store>\ncategory=c\n{store}\n</store>\n")
    assert fatal == (why is not None)
    if why is not None:
        assert any(why in line for line in lines), lines


def test_inherited_type_keys_are_read_and_reported_once() -> None:
    text = "file::max_size=77\n<store>\ncategory=default\ntype=file\nfile_path=/f\n</store>\n"
    tree, lines, _ = imported(text)
    assert tree["consumers"][0]["files"]["max_size"] == 77
    assert lines[0].startswith("line 1: [store0] file::max_size=77: mapped to max_size = 77")


def test_rotation_periods_as_the_files_sink_spells_them() -> None:
    for scribe, ours in (("2w", "14d"), ("90m", "90m"), ("30", "30s"), ("hourly", "hourly")):
        text = f"<store>\ncategory=d\ntype=file\nfile_path=/f\nrotate_period={scribe}\n</store>\n"
        tree, _, _ = imported(text)
        assert tree["consumers"][0]["files"]["rotate_period"] == ours


# ---------------------------------------------------------------------- the commands


def test_import_scribe_prints_toml_and_the_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["config", "import-scribe", str(GOLDEN / "leaf_buffer_network.conf")]
    )
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout)["consumers"][0]["sink"] == "forward"
    assert "leaf_buffer_network.conf: line 6: new_thread_per_category=yes: ignored: " in (
        result.stderr
    )


def test_import_scribe_exits_1_when_something_cannot_be_honoured() -> None:
    result = CliRunner().invoke(
        main, ["config", "import-scribe", str(GOLDEN / "unsupported_hdfs.conf")]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("Error: 1 Scribe setting(s) cannot be")
    assert "fs_type=hdfs: unsupported: " in result.stderr
    tomllib.loads(result.stdout)


@pytest.mark.parametrize(
    ("text", "where"),
    [("port=1\nbroken\n", "line 2: "), ("port=14x63\n", "line 1: port='14x63'")],
)
def test_import_scribe_exits_2_naming_the_line(tmp_path: Path, text: str, where: str) -> None:
    conf = tmp_path / "scribe.conf"
    conf.write_text(text)
    result = CliRunner().invoke(main, ["config", "import-scribe", str(conf)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: {conf}: {where}")


def test_config_check_summarizes_a_valid_configuration(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[server]\nport = 1999\n[[routing.routes]]\ncategory = "a*"\n')
    result = CliRunner().invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{config}: valid; server 127.0.0.1:1999") and "routes: a*" in line
    as_json = CliRunner().invoke(main, ["config", "check", "--config", str(config), "--json"])
    assert as_json.exit_code == 0 and '"valid": true' in as_json.stdout


def test_config_check_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text("[admission]\nrate_burst_s = -1\n")
    result = CliRunner().invoke(main, ["config", "check", "--config", str(config)])
    assert result.exit_code == 78
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: invalid configuration: ") and "admission.rate_burst_s" in line


# ---------------------------------------------------------------------- the TOML writer

_KEYS = st.text(min_size=1, max_size=8)
_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=10),
)
_TABLES = st.recursive(
    st.dictionaries(_KEYS, _SCALARS, max_size=4),
    lambda inner: st.dictionaries(
        _KEYS, st.one_of(_SCALARS, inner, st.lists(inner, min_size=1, max_size=2)), max_size=4
    ),
    max_leaves=12,
)


@given(_TABLES)
def test_the_toml_writer_round_trips_through_tomllib(tree: dict[str, Any]) -> None:
    back = tomllib.loads(dumps(tree))
    assert _same(back, tree)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b) and type(a) is type(b)
