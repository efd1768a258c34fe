"""``pipeline cluster status``: the registered log servers, their partitions, and every
group's units with owner, committed offset and lag (``pipeline.cluster_view``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from consumers import CoordinationError
from pipeline.cli.common import (
    InvalidConfigError,
    config_option,
    json_option,
    load_config,
    require_known,
    run_async,
    text,
    timeout_option,
    write_json_lines,
)
from pipeline.cluster_view import ClusterState, cluster_state, group_names
from pipeline.config import PipelineConfig
from pipeline.consumer_config import CoordinationKind


def require_registry(config: PipelineConfig) -> None:
    """The registry lives in ZooKeeper: any other coordination has none (exit 78)."""
    if config.coordination.kind is not CoordinationKind.ZOOKEEPER:
        raise InvalidConfigError(
            'coordination.kind: the journal registry needs "zookeeper", '
            f"not {config.coordination.kind.value!r}"
        )


@click.group("cluster")
def cluster_group() -> None:
    """Log servers registered in ZooKeeper and the groups reading them."""


@cluster_group.command("status")
@config_option
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    help="Only these groups (default: every configured group and every group with stored offsets).",
)
@timeout_option
@json_option('One JSON object per line: "kind" is server, partition, group or unit.')
def status_command(
    config_path: Path | None, groups: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Servers (journal id, fetch address, alive), their partitions' earliest offsets and
    high-water marks, and per group the owner, committed offset and lag of every unit.

    A unit whose server is not registered now keeps its offsets; it shows no high-water mark.
    """
    config = load_config(config_path)
    require_registry(config)
    state = run_async(_state, config, list(groups), timeout, errors=(CoordinationError,))
    rows = status_rows(state)
    if as_json:
        write_json_lines(sys.stdout, rows)
    else:
        print_table(rows)


async def _state(config: PipelineConfig, groups: list[str], timeout_s: float) -> ClusterState:
    if groups:
        known = await group_names(config)
        for name in groups:
            require_known("consumer group", name, known)
    return await cluster_state(config, groups or None, timeout_s)


def status_rows(state: ClusterState) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for server in state.servers:
        registration = server.registration
        rows.append(
            {
                "kind": "server",
                "journal_id": registration.journal_id,
                "fetch": registration.fetch_address,
                "host": registration.host,
                "pid": registration.pid,
                "alive": server.alive,
                "error": server.error,
                "partitions": len(registration.partitions),
            }
        )
        for pid in registration.partitions:
            described = server.partitions.get(pid)
            rows.append(
                {
                    "kind": "partition",
                    "journal_id": registration.journal_id,
                    "category": text(pid.category),
                    "partition": pid.partition,
                    "earliest": None if described is None else described.earliest,
                    "high_water_mark": None if described is None else described.high_water_mark,
                }
            )
    for group in state.groups:
        rows.append(
            {
                "kind": "group",
                "group": group.name,
                "configured": group.configured,
                "members": group.members,
                "units": len(group.units),
            }
        )
        for unit in group.units:
            found = state.server(unit.unit.journal_id)
            rows.append(
                {
                    "kind": "unit",
                    "group": group.name,
                    "journal_id": unit.unit.journal_id,
                    "category": text(unit.unit.category),
                    "partition": unit.unit.partition,
                    "registered": found is not None,
                    "alive": found is not None and found.alive,
                    "owner": unit.owner,
                    "committed": unit.committed,
                    "earliest": unit.earliest,
                    "high_water_mark": unit.high_water_mark,
                    "lag": unit.lag,
                }
            )
    return rows


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    servers = [r for r in rows if r["kind"] == "server"]
    click.echo(f"{'JOURNAL':32} {'FETCH':24} {'ALIVE':5} {'PARTS':>5} HOST")
    for r in servers:
        alive = "yes" if r["alive"] else "no"
        click.echo(
            f"{r['journal_id']:32} {r['fetch']:24} {alive:5} {r['partitions']:>5} {r['host']}"
        )
    click.echo("")
    click.echo(f"{'JOURNAL':8} {'CATEGORY':28} {'PART':>4} {'EARLIEST':>12} {'HIGH-WATER':>12}")
    for r in (r for r in rows if r["kind"] == "partition"):
        click.echo(
            f"{r['journal_id'][:8]:8} {r['category'][:28]:28} {r['partition']:>4} "
            f"{_cell(r['earliest']):>12} {_cell(r['high_water_mark']):>12}"
        )
    for group in (r for r in rows if r["kind"] == "group"):
        configured = "" if group["configured"] else " (not configured)"
        members = ", ".join(group["members"]) or "none"
        click.echo("")
        click.echo(f"group {group['group']}{configured}: members {members}")
        click.echo(
            f"  {'JOURNAL':8} {'CATEGORY':24} {'PART':>4} {'OWNER':24} {'COMMITTED':>12} "
            f"{'HIGH-WATER':>12} {'LAG':>10}"
        )
        for r in (r for r in rows if r["kind"] == "unit" and r["group"] == group["group"]):
            gone = "" if r["registered"] else "  (server not registered)"
            click.echo(
                f"  {r['journal_id'][:8]:8} {r['category'][:24]:24} {r['partition']:>4} "
                f"{_cell(r['owner'])[:24]:24} {_cell(r['committed']):>12} "
                f"{_cell(r['high_water_mark']):>12} {_cell(r['lag']):>10}{gone}"
            )
