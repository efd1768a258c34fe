"""Errors of the scribe.conf importer.

    ScribeConfError(PipelineError)   a scribe.conf cannot be read as Scribe would read it
     └── ScribeSyntaxError           a line breaks the syntax or a value is not what its key
                                     takes: ``line`` (1-based) and ``problem``

Both name the line, so an operator can fix the file; the CLI turns them into exit 2 (a usage
error of the file given), never 78 (which is about a pipeline configuration).
"""

from __future__ import annotations

from pipeline.errors import PipelineError


class ScribeConfError(PipelineError):
    """Base of the importer's errors."""


class ScribeSyntaxError(ScribeConfError):
    """Line ``line`` of the scribe.conf: ``problem``."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(line, problem)
        self.line = line
        self.problem = problem

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"
