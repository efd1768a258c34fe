"""Bounded label values for categories: the first ``limit`` seen keep their name, the others
are folded into ``other`` (and counted), so a client inventing categories cannot grow the
number of series without bound."""

from __future__ import annotations

OTHER = "other"


class CategoryLabels:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._names: dict[bytes, str] = {}
        self._folded: set[bytes] = set()

    def __call__(self, category: bytes) -> str:
        name = self._names.get(category)
        if name is not None:
            return name
        if category in self._folded:
            return OTHER
        if len(self._names) < self._limit:
            # Undecodable bytes as \xNN escapes, as the fb303 counters show them.
            name = self._names[category] = category.decode("utf-8", "backslashreplace")
            return name
        self._folded.add(category)
        return OTHER

    @property
    def folded(self) -> int:
        """How many categories share the ``other`` label."""
        return len(self._folded)
