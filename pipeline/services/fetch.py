"""Fetching a server's jars from Maven Central, once.

Each server has a small POM in ``conf/services/`` that names it as a dependency;
``mvn dependency:copy-dependencies`` copies it and its runtime dependencies into
``<cache_dir>/services/<name>-<version>/lib``.  A ``complete`` marker beside ``lib`` is written
last, so an interrupted fetch is redone and a finished one is never fetched again.  Maven's own
local repository (``~/.m2`` unless its settings say otherwise) also keeps the downloads, so even a
fresh clone on the same machine copies rather than downloads.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.services.process import ServiceError, tail_lines

__all__ = ["Artifact", "FetchError", "ensure_lib", "maven_command"]

# The first Cassandra fetch downloads about 70 MB in some 100 jars; a slow mirror day is slow.
FETCH_TIMEOUT_S = 20 * 60.0


class FetchError(ServiceError):
    """Maven could not fetch a server's jars."""


@dataclass(frozen=True)
class Artifact:
    """What to fetch: ``pom`` names the server; ``version_property`` selects its version."""

    name: str  # "cassandra", "zookeeper": the cache folder's prefix
    pom: Path
    version_property: str
    version: str
    main_jar: str  # must be in lib afterwards, e.g. "cassandra-all-5.0.5.jar"


def lib_dir(artifact: Artifact, cache_dir: Path) -> Path:
    return cache_dir / "services" / f"{artifact.name}-{artifact.version}" / "lib"


def maven_command(mvn: str, artifact: Artifact, target: Path) -> list[str]:
    return [
        mvn,
        "-B",
        "--no-transfer-progress",
        "-f",
        str(artifact.pom),
        f"-D{artifact.version_property}={artifact.version}",
        f"-Dlib.dir={target}",
        "dependency:copy-dependencies",
    ]


def ensure_lib(
    artifact: Artifact,
    cache_dir: Path,
    log_path: Path,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The folder of ``artifact``'s jars, fetching them with Maven on first use."""
    lib = lib_dir(artifact, cache_dir)
    marker = lib.parent / "complete"
    if marker.is_file() and (lib / artifact.main_jar).is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(
            artifact.name,
            "Maven (mvn) is not on PATH; it fetches the server's jars on the first start "
            "(install it: scripts/ensure-system-packages, or apt-get install maven)",
        )
    partial = lib.parent / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = maven_command(mvn, artifact, partial.resolve())
    progress(f"fetching {artifact.name} {artifact.version} with Maven (first start only)")
    started = time.monotonic()
    with log_path.open("wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=FETCH_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FetchError(
                artifact.name,
                f"Maven did not finish fetching within {FETCH_TIMEOUT_S:g} s",
                log_tail=tail_lines([log_path]),
            ) from None
    if result.returncode != 0:
        raise FetchError(
            artifact.name,
            f"Maven failed (exit {result.returncode}) fetching {artifact.name} "
            f"{artifact.version}; its log: {log_path}",
            log_tail=tail_lines([log_path]),
        )
    if not (partial / artifact.main_jar).is_file():
        raise FetchError(
            artifact.name,
            f"Maven finished but {artifact.main_jar} is missing; its log: {log_path}",
            log_tail=tail_lines([log_path]),
        )
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)
    jars = sorted(p.name for p in lib.glob("*.jar"))
    marker.write_text(" ".join(command) + "\n" + "\n".join(jars) + "\n")
    progress(
        f"fetched {artifact.name} {artifact.version}: {len(jars)} jars "
        f"in {time.monotonic() - started:.1f} s"
    )
    return lib
