"""Scribe-side test helpers: a do-nothing fb303 base for in-test handlers, and Apache Thrift's
Python code generated from our IDL by Debian's thrift compiler."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from scribe_compat import FbStatus

IDL = Path(__file__).parents[2] / "scribe_compat" / "idl"


class QuietFb303:
    """fb303 answers that say nothing; subclasses add ``log``."""

    def get_name(self) -> str:
        return type(self).__name__

    def get_version(self) -> str:
        return "0"

    def get_status(self) -> FbStatus:
        return FbStatus.ALIVE

    def get_status_details(self) -> str:
        return ""

    def get_counters(self) -> dict[str, int]:
        return {}

    def get_counter(self, key: str) -> int:
        return 0

    def set_option(self, key: str, value: str) -> None:
        pass

    def get_option(self, key: str) -> str:
        return ""

    def get_options(self) -> dict[str, str]:
        return {}

    def get_cpu_profile(self, seconds: int) -> str:
        return ""

    def alive_since(self) -> int:
        return int(time.time())

    async def reinitialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


@contextmanager
def apache_generated(out: Path) -> Iterator[SimpleNamespace]:
    """Generate Apache Thrift's Python code for our IDL into ``out`` and import it."""
    for name in ("fb303.thrift", "scribe.thrift"):
        subprocess.run(
            ["/usr/bin/thrift", "--gen", "py", "-I", str(IDL), "-out", str(out), IDL / name],
            check=True,
        )
    sys.path.insert(0, str(out))
    try:
        yield SimpleNamespace(
            scribe=importlib.import_module("scribe.scribe"),
            ttypes=importlib.import_module("scribe.ttypes"),
            fb303_ttypes=importlib.import_module("fb303.ttypes"),
        )
    finally:
        sys.path.remove(str(out))
