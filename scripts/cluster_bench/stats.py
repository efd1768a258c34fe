"""Figures over rounds: min, median and max, as the benchmark pages report them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], digits: int = 2) -> dict[str, float | int]:
    """``{"n", "min", "median", "max"}`` of ``values`` (an empty sequence gives only n = 0)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }
