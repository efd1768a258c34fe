"""Tests against the local ZooKeeper ensemble and Cassandra cluster (conf/services/cluster.toml),
which they stop and start member by member.

Every test here is marked ``cluster`` and runs only when asked for by marker (``pytest -m
cluster``, as `make cluster-test` does after starting the clusters): the normal suite neither
needs nor starts them.  A test that stopped members has them started again afterwards, also when
it failed, and a failing test's report carries the members' log tails and its daemons' logs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from local_clusters import CLUSTER_CONFIG, LocalCluster, cluster_services_config

HERE = Path(__file__).parent
MARKER = "cluster"


def _here(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Deselected rather than skipped: without the clusters these tests are not part of the run.
    wanted = MARKER in (config.option.markexpr or "")
    chosen, dropped = [], []
    for item in items:
        if _here(item):
            item.add_marker(pytest.mark.cluster)
            (chosen if wanted else dropped).append(item)
        else:
            chosen.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = chosen


def _cluster(service: str) -> Iterator[LocalCluster]:
    cluster = LocalCluster(service, cluster_services_config())
    missing = cluster.not_running()
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not running: run `make cluster-test`, or first "
            f"`pipeline services start --config {CLUSTER_CONFIG.relative_to(HERE.parents[1])}`"
        )
    try:
        yield cluster
    finally:
        cluster.restore()


@pytest.fixture
def zk_ensemble() -> Iterator[LocalCluster]:
    """The three ZooKeeper servers, all running; those the test stops are started again."""
    yield from _cluster("zookeeper")


@pytest.fixture
def cassandra_cluster() -> Iterator[LocalCluster]:
    """The Cassandra nodes, all running; those the test stops are started again."""
    yield from _cluster("cassandra")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _here(item):
        funcargs = getattr(item, "funcargs", {})
        for name in ("zk_ensemble", "cassandra_cluster"):
            cluster = funcargs.get(name)
            if isinstance(cluster, LocalCluster):
                report.sections.append((f"{cluster.service} logs", "\n".join(cluster.log_tail())))
        tmp_path = funcargs.get("tmp_path")
        for log_file in sorted(Path(tmp_path).glob("*.log")) if tmp_path else ():
            lines = log_file.read_text(errors="replace").splitlines()[-60:]
            report.sections.append((f"{log_file.name} tail", "\n".join(lines)))
    return report
