"""The pipeline's own tables: created and migrated by version, and checked against the cluster.

Every table a materializer owns is a `TableSpec`.  ``schema_versions`` records, per table, the
version applied and its CQL.  `apply` brings each table to its spec's version: version 1 is
``CREATE TABLE IF NOT EXISTS``, each later version one migration (``ALTER TABLE ... ADD``), run
in order and tolerant of having run before (a migration that finds its column already there
counts as done).  A table found without a recorded version (created by hand, or by an older
pipeline before versions were kept) is adopted when its columns fit.  A table whose compaction
differs from its spec's (an events table whose TTL changed) is altered to it.  A table at a newer
version than this code knows is refused, never downgraded.

`problems` compares specs with the live tables (`read_tables`, from ``system_schema``): missing
tables, missing columns, columns of another type, another primary key, another compaction.  The
sink refuses to start while there are any; ``pipeline schema diff`` prints them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from consumers.cassandra import CassandraSession
from consumers.errors import CassandraInvalidRequest, SchemaMismatch
from consumers.sinks.cassandra.cqltypes import normalize
from consumers.sinks.cassandra.model import LiveTable, TableSpec

SCHEMA_VERSIONS = TableSpec(
    name="schema_versions",
    columns=(
        ("table_name", "text"),
        ("version", "int"),
        ("owner", "text"),
        ("cql", "text"),
        ("applied_at", "timestamp"),
    ),
    partition_key=("table_name",),
    comment="scribe-pipeline: the version of each table the pipeline created",
)


async def read_tables(
    session: CassandraSession, keyspace: str, names: Iterable[str]
) -> dict[str, LiveTable]:
    """The live tables among ``names`` (absent ones are left out)."""
    tables: dict[str, LiveTable] = {}
    for name in sorted(set(names)):
        rows = await session.execute(
            "SELECT column_name, type, kind, position FROM system_schema.columns"
            " WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, name),
        )
        if not rows.rows:
            continue
        options = await session.execute(
            "SELECT compaction FROM system_schema.tables"
            " WHERE keyspace_name = %s AND table_name = %s",
            (keyspace, name),
        )
        compaction = options.one()
        columns = {str(r[0]): str(r[1]) for r in rows.rows}
        keys: dict[str, list[tuple[int, str]]] = {"partition_key": [], "clustering": []}
        for column, _, kind, position in rows.rows:
            if kind in keys:
                keys[kind].append((int(position), str(column)))
        tables[name] = LiveTable(
            name,
            columns,
            tuple(c for _, c in sorted(keys["partition_key"])),
            tuple(c for _, c in sorted(keys["clustering"])),
            dict(compaction[0]) if compaction and compaction[0] else {},
        )
    return tables


def problems(specs: Sequence[TableSpec], live: Mapping[str, LiveTable]) -> list[str]:
    """What differs between the specs and the live tables, one sentence each."""
    found: list[str] = []
    for spec in specs:
        table = live.get(spec.name)
        if table is None:
            found.append(f"table {spec.name!r} does not exist")
            continue
        for column, kind in spec.columns:
            have = table.columns.get(column)
            if have is None:
                found.append(f"table {spec.name!r}: column {column!r} ({kind}) is missing")
            elif normalize(have) != normalize(kind):
                found.append(f"table {spec.name!r}: column {column!r} is {have}, expected {kind}")
        if not compaction_fits(spec, table):
            found.append(
                f"table {spec.name!r}: compaction is {_compaction(table.compaction)}, expected "
                f"{_compaction(dict(spec.compaction))} (`pipeline schema apply` changes it)"
            )
        clustering = tuple(name for name, _ in spec.clustering)
        if table.partition_key != spec.partition_key or table.clustering != clustering:
            found.append(
                f"table {spec.name!r}: primary key is {_key(table.partition_key, table.clustering)}"
                f", expected {_key(spec.partition_key, clustering)}"
            )
    return found


def compaction_fits(spec: TableSpec, table: LiveTable) -> bool:
    """Whether the live table compacts as the spec says (a spec without one: any way)."""
    for key, value in spec.compaction:
        have = table.compaction.get(key, "")
        # The server names classes in full (org.apache.cassandra.db.compaction.X).
        if have != value and not (key == "class" and have.endswith("." + value)):
            return False
    return True


def _compaction(options: Mapping[str, str]) -> str:
    strategy = options.get("class", "?").rsplit(".", 1)[-1]
    rest = ", ".join(f"{k}={v}" for k, v in sorted(options.items()) if k.startswith("compaction_"))
    return f"{strategy}({rest})" if rest else strategy


def _key(partition: tuple[str, ...], clustering: tuple[str, ...]) -> str:
    return f"(({', '.join(partition)}){''.join(', ' + c for c in clustering)})"


async def applied_versions(session: CassandraSession, keyspace: str) -> dict[str, int]:
    """Per table, the version recorded in ``schema_versions`` (empty when it does not exist)."""
    if not await read_tables(session, keyspace, [SCHEMA_VERSIONS.name]):
        return {}
    rows = await session.execute(f"SELECT table_name, version FROM {keyspace}.schema_versions")
    return {str(name): int(version) for name, version in rows.rows}


async def apply(
    session: CassandraSession,
    keyspace: str,
    specs: Sequence[TableSpec],
    *,
    owner: str,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Bring every table to its spec's version; returns what was done, one line each.

    Raises `SchemaMismatch` for a table newer than its spec or an adopted table that does not
    fit.
    """
    done: list[str] = []
    await session.execute(SCHEMA_VERSIONS.create_cql(keyspace))
    versions = await applied_versions(session, keyspace)
    live = await read_tables(session, keyspace, [spec.name for spec in specs])
    for spec in specs:
        current = versions.get(spec.name)
        if current is not None and current > spec.version:
            raise SchemaMismatch(
                [
                    f"table {spec.name!r} is at version {current}, newer than this pipeline's "
                    f"{spec.version}: upgrade the pipeline"
                ]
            )
        if spec.name in live and not compaction_fits(spec, live[spec.name]):
            await session.execute(
                f"ALTER TABLE {keyspace}.{spec.name} WITH {spec.compaction_cql()}"
            )
            done.append(f"altered {keyspace}.{spec.name}: {_compaction(dict(spec.compaction))}")
        if current == spec.version:
            continue
        if current is None:
            if spec.name in live:
                wrong = problems([spec], live)
                if wrong:
                    raise SchemaMismatch(wrong)
                done.append(f"adopted {keyspace}.{spec.name} at version {spec.version}")
            else:
                await session.execute(spec.create_cql(keyspace))
                done.append(f"created {keyspace}.{spec.name} (version {spec.version})")
        else:
            for version, migration in enumerate(spec.migrations[current - 1 :], start=current + 1):
                cql = migration.format(table=f"{keyspace}.{spec.name}")
                try:
                    await session.execute(cql)
                except CassandraInvalidRequest as exc:
                    if "already exist" not in exc.reason and "conflicts" not in exc.reason:
                        raise
                done.append(f"migrated {keyspace}.{spec.name} to version {version}")
        await _record(session, keyspace, spec, owner, clock)
    return done


async def _record(
    session: CassandraSession,
    keyspace: str,
    spec: TableSpec,
    owner: str,
    clock: Callable[[], float],
) -> None:
    await session.execute(
        f"INSERT INTO {keyspace}.schema_versions (table_name, version, owner, cql, applied_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (spec.name, spec.version, owner, cql_of(spec, keyspace), int(clock() * 1000)),
    )


def cql_of(spec: TableSpec, keyspace: str) -> str:
    """The whole CQL of a spec: its CREATE and every migration, as ``schema show`` prints."""
    statements = [spec.create_cql(keyspace)]
    statements += [m.format(table=f"{keyspace}.{spec.name}") for m in spec.migrations]
    return ";\n".join(statements) + ";"
