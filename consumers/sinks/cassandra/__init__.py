"""The Cassandra sink and its materializers (events, latest, mapping, and users' plugins)."""

from consumers.sinks.cassandra.deadletters import (
    DEAD_LETTERS,
    DeadLetter,
    delete_dead_letter,
    get_dead_letter,
    list_dead_letters,
)
from consumers.sinks.cassandra.events import EventsMaterializer, EventsOptions
from consumers.sinks.cassandra.latest import LatestMaterializer, LatestOptions
from consumers.sinks.cassandra.mapping import MappingMaterializer, MappingOptions
from consumers.sinks.cassandra.model import (
    BaseMaterializer,
    Event,
    LiveTable,
    Materialized,
    Materializer,
    MaterializerError,
    Rejected,
    Row,
    TableSpec,
)
from consumers.sinks.cassandra.plugins import (
    BUILTINS,
    PluginError,
    build_plugin,
    is_plugin,
    load_plugin,
)
from consumers.sinks.cassandra.schema import SCHEMA_VERSIONS
from consumers.sinks.cassandra.sink import CassandraSink

__all__ = [
    "BUILTINS",
    "DEAD_LETTERS",
    "SCHEMA_VERSIONS",
    "BaseMaterializer",
    "CassandraSink",
    "DeadLetter",
    "Event",
    "EventsMaterializer",
    "EventsOptions",
    "LatestMaterializer",
    "LatestOptions",
    "LiveTable",
    "MappingMaterializer",
    "MappingOptions",
    "Materialized",
    "Materializer",
    "MaterializerError",
    "PluginError",
    "Rejected",
    "Row",
    "TableSpec",
    "build_plugin",
    "delete_dead_letter",
    "get_dead_letter",
    "is_plugin",
    "list_dead_letters",
    "load_plugin",
]
