"""Which materializer a group runs: a built-in one by name, or a user's plugin by import path.

A plugin is ``materializer = "package.module:ClassName"`` in the group's ``[consumers.cassandra]``
table (``plugin_path`` adds a directory to the import path first).  The class is called with the
table's other keys as a dict and must give an object with the `Materializer` protocol
(`consumers.sinks.cassandra.model`; subclass `BaseMaterializer` for its defaults).  It raises
ValueError for options it does not accept.  ``conf/plugins/access_log.py`` is an example.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from consumers.sinks.cassandra.events import EventsMaterializer, EventsOptions
from consumers.sinks.cassandra.latest import LatestMaterializer, LatestOptions
from consumers.sinks.cassandra.mapping import MappingMaterializer, MappingOptions
from consumers.sinks.cassandra.model import Materializer

# name -> (options dataclass, materializer class)
BUILTINS: dict[str, tuple[type[Any], Callable[[Any], Materializer]]] = {
    "events": (EventsOptions, EventsMaterializer),
    "latest": (LatestOptions, LatestMaterializer),
    "mapping": (MappingOptions, MappingMaterializer),
}


class PluginError(ValueError):
    """A plugin cannot be loaded or built; the message says why."""


def is_plugin(name: str) -> bool:
    return ":" in name


def load_plugin(spec: str, plugin_path: Path | None = None) -> Callable[..., Any]:
    """The class (or factory) named by ``package.module:Name``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"{spec!r} is not 'package.module:ClassName'")
    if plugin_path is not None and str(plugin_path) not in sys.path:
        sys.path.insert(0, str(plugin_path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise PluginError(f"module {module_name!r} has no class {attribute!r}")
    return factory  # type: ignore[no-any-return]


def build_plugin(
    spec: str, options: Mapping[str, Any], plugin_path: Path | None = None
) -> Materializer:
    factory = load_plugin(spec, plugin_path)
    try:
        materializer = factory(dict(options))
    except (ValueError, TypeError) as exc:
        raise PluginError(f"{spec}: {exc}") from exc
    if not isinstance(materializer, Materializer):
        raise PluginError(
            f"{spec} does not implement the materializer protocol (name, tables, writes, check, "
            "materialize): subclass consumers.sinks.cassandra.BaseMaterializer"
        )
    return materializer
