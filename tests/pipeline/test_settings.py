"""The generic TOML/environment loader: types checked, keys named in every error."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline import settings
from pipeline.errors import ConfigError


class Mode(enum.Enum):
    A = "a"
    B = "b"


@dataclass(frozen=True)
class Inner:
    size: int = 1


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    ratio: float = 1.0
    flag: bool = False
    mode: Mode = Mode.A
    path: Path = Path("p")
    limit: int | None = None
    tags: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise ValueError("ratio must not be negative")


def test_builds_every_supported_type() -> None:
    built = settings.build(
        Outer,
        {
            "name": "n",
            "ratio": 2,
            "flag": True,
            "mode": "b",
            "path": "/tmp/x",
            "limit": 5,
            "tags": ["t"],
            "inner": {"size": 3},
        },
        "outer",
    )
    assert built == Outer("n", 2.0, True, Mode.B, Path("/tmp/x"), 5, ("t",), Inner(3))


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"nope": 1}, "outer.nope", "unknown key"),
        ({"name": 1}, "outer.name", "expected a string"),
        ({"flag": "yes"}, "outer.flag", "expected true or false"),
        ({"mode": "c"}, "outer.mode", "is not one of"),
        ({"inner": {"size": "big"}}, "outer.inner.size", "expected an integer"),
        ({"inner": 3}, "outer.inner", "expected a table"),
        ({"ratio": -1}, "outer.ratio", "ratio must not be negative"),
        ({"limit": True}, "outer.limit", "expected an integer"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings.build(Outer, data, "outer")
    assert info.value.key == key
    assert problem in info.value.problem


def test_environment_overrides_nest_on_double_underscores() -> None:
    env = {
        "PIPELINE_SERVER__PORT": "1464",
        "PIPELINE_SERVER__LIMITS__MAX_FRAME_BYTES": "1024",
        "PIPELINE_JOURNAL__DIR": "/data/journal",
        "PIPELINE_LOG__LEVEL": "debug",
        "PIPELINE_SERVICES__VAR_DIR": "2024-01-01",
        "PIPELINE_CONFIG": "ignored: no section separator",
        "OTHER": "x",
    }
    assert settings.env_overrides(env) == {
        "server": {"port": 1464, "limits": {"max_frame_bytes": 1024}},
        "journal": {"dir": "/data/journal"},
        "log": {"level": "debug"},
        "services": {"var_dir": "2024-01-01"},
    }


def test_merge_is_deep() -> None:
    assert settings.merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 9}}) == {
        "a": {"b": 9, "c": 2},
        "d": 3,
    }
