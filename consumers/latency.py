"""Latency percentiles over a sliding window of the most recent samples."""

from __future__ import annotations

from collections import deque


class LatencyWindow:
    """Keeps the last ``size`` durations (seconds); `summary` gives p50, p99 and max in µs
    (``<prefix> p50 us``: named as counters are)."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def summary(self, prefix: str) -> dict[str, int]:
        ordered = sorted(self._samples)
        if not ordered:
            return {f"{prefix} p50 us": 0, f"{prefix} p99 us": 0, f"{prefix} max us": 0}

        def at(fraction: float) -> int:
            return int(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e6)

        return {
            f"{prefix} p50 us": at(0.50),
            f"{prefix} p99 us": at(0.99),
            f"{prefix} max us": int(ordered[-1] * 1e6),
        }
