"""The last 15 minutes of each endpoint's metrics, sampled from the Prometheus registry that the
data plane updates (``hosting.metrics``): per sample the invocations, 4XX and 5XX in that interval
and ModelLatency p50/p99 and mean OverheadLatency from the histograms' bucket deltas."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

from modelhost.hosting.metrics import REGISTRY

WINDOW_SECONDS = 15 * 60
INTERVAL = 5.0
COUNTERS = {
    "modelhost_invocations": "invocations",
    "modelhost_invocation_4xx_errors": "errors_4xx",
    "modelhost_invocation_5xx_errors": "errors_5xx",
}
HISTOGRAMS = {
    "modelhost_model_latency_microseconds": "model_latency",
    "modelhost_overhead_latency_microseconds": "overhead_latency",
}


@dataclass
class Totals:
    """Cumulative values of one endpoint at one instant (summed over its variants)."""

    counters: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # histogram -> le -> cumulative count
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    at: float
    invocations: float
    errors_4xx: float
    errors_5xx: float
    model_p50_ms: float | None
    model_p99_ms: float | None
    overhead_ms: float | None


def read_registry() -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for metric in REGISTRY.collect():
        counter = COUNTERS.get(metric.name) or COUNTERS.get(metric.name.removesuffix("_total"))
        histogram = HISTOGRAMS.get(metric.name)
        if counter is None and histogram is None:
            continue
        for sample in metric.samples:
            endpoint = sample.labels.get("endpoint")
            if endpoint is None:
                continue
            totals = out.setdefault(endpoint, Totals())
            if counter is not None and sample.name.endswith("_total"):
                totals.counters[counter] = totals.counters.get(counter, 0.0) + sample.value
            elif histogram is not None and sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                b = totals.buckets.setdefault(histogram, {})
                b[le] = b.get(le, 0.0) + sample.value
            elif histogram is not None and sample.name.endswith("_sum"):
                totals.sums[histogram] = totals.sums.get(histogram, 0.0) + sample.value
            elif histogram is not None and sample.name.endswith("_count"):
                totals.counts[histogram] = totals.counts.get(histogram, 0.0) + sample.value
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count), linearly interpolated
    inside the bucket (as Prometheus' histogram_quantile)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def delta_point(at: float, new: Totals, old: Totals | None) -> Point:
    def diff(name: str) -> float:
        return max(new.counters.get(name, 0.0) - (old.counters.get(name, 0.0) if old else 0.0), 0.0)

    def hist(name: str) -> list[tuple[float, float]]:
        before = old.buckets.get(name, {}) if old else {}
        return sorted((le, c - before.get(le, 0.0)) for le, c in new.buckets.get(name, {}).items())

    def us_to_ms(value: float | None) -> float | None:
        return None if value is None else value / 1000.0

    count = new.counts.get("overhead_latency", 0.0) - (old.counts.get("overhead_latency", 0.0) if old else 0.0)
    total = new.sums.get("overhead_latency", 0.0) - (old.sums.get("overhead_latency", 0.0) if old else 0.0)
    return Point(
        at,
        diff("invocations"),
        diff("errors_4xx"),
        diff("errors_5xx"),
        us_to_ms(quantile(hist("model_latency"), 0.5)),
        us_to_ms(quantile(hist("model_latency"), 0.99)),
        us_to_ms(total / count) if count > 0 else None,
    )


class MetricsHistory:
    """Samples every INTERVAL seconds while the server runs (started by the console's first request)."""

    def __init__(self, interval: float = INTERVAL, window: float = WINDOW_SECONDS) -> None:
        self.interval = interval
        self.size = int(window / interval)
        self.points: dict[str, deque[Point]] = {}
        self._last: dict[str, Totals] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for endpoint, totals in read_registry().items():
            old = self._last.get(endpoint)
            self._last[endpoint] = totals
            if old is None:  # first sight: the baseline (what came before is outside the window)
                self.points.setdefault(endpoint, deque(maxlen=self.size))
                continue
            self.points[endpoint].append(delta_point(now, totals, old))

    def series(self, endpoint: str) -> list[Point]:
        return list(self.points.get(endpoint, ()))
