"""Migration from Scribe: read a scribe.conf (``parse``) and map it onto a pipeline
configuration (``import_scribe``), with a verdict for every Scribe key (``Report``)."""

from pipeline.scribe_conf.errors import ScribeConfError, ScribeSyntaxError
from pipeline.scribe_conf.mapping import Imported, import_scribe
from pipeline.scribe_conf.parse import Block, Setting, parse, parse_bytes
from pipeline.scribe_conf.report import Report, Verdict
from pipeline.scribe_conf.toml_out import dumps

__all__ = [
    "Block",
    "Imported",
    "Report",
    "ScribeConfError",
    "ScribeSyntaxError",
    "Setting",
    "Verdict",
    "dumps",
    "import_scribe",
    "parse",
    "parse_bytes",
]
