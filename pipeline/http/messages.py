"""Requests and responses as plain values, so routes are tested without sockets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    # Each parameter with every value it was given (``?a=1&a=2``: ``{"a": ["1", "2"]}``).
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, document: Mapping[str, Any]) -> Response:
    body = json.dumps(document, sort_keys=True).encode() + b"\n"
    return Response(status, body, JSON)


def error_response(
    status: int, problem: str, *, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The one shape of every error: ``{"error": "<problem>"}``."""
    response = json_response(status, {"error": problem})
    return Response(response.status, response.body, response.content_type, headers)
