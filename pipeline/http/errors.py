"""Errors of the HTTP layer.

    HttpError
     └── RequestRejected   a request the server will not serve: the status (4xx) and the
                           problem, naming the parameter, header or limit

A handler raises ``RequestRejected``; the router turns it into the JSON error response.
h11's ``RemoteProtocolError`` is translated in ``pipeline.http.server``, the one module that
talks to h11.
"""

from __future__ import annotations


class HttpError(Exception):
    """Base of the HTTP layer's errors."""


class RequestRejected(HttpError):  # noqa: N818 (reads as an outcome, as journal.JournalFull)
    """Answer ``status`` with ``problem`` (which names what is wrong)."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(status, problem)
        self.status = status
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.status}: {self.problem}"
