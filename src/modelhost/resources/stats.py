"""Cheap in-memory counters per fleet, read by rollback alarms and the autoscaler.

Prometheus (metrics.py) is for people; these are for the control loops: plain integers and a
bounded window of recent latencies, updated on the hot path without locks (one event loop).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field


@dataclass
class FleetStats:
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    # (monotonic time, model latency µs) of recent requests
    latencies: collections.deque[tuple[float, float]] = field(default_factory=lambda: collections.deque(maxlen=4096))

    def observe(self, latency_us: float) -> None:
        self.latencies.append((time.monotonic(), latency_us))

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.errors_4xx, self.errors_5xx

    def latency_percentile(self, since: float, q: float) -> float | None:
        values = sorted(v for t, v in self.latencies if t >= since)
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]
