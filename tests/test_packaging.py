"""The project's packaging metadata: the forms current setuptools takes without deprecation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    data = tomllib.loads(PYPROJECT.read_text())
    # A table ({ text = ... }) makes every `pip install` print setuptools' deprecation banner.
    assert data["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert match is not None, setuptools
    assert int(match.group(1)) >= 77, "older setuptools do not read an SPDX license string"
