"""The queue's metrics: per-variant counters and histograms, per-endpoint backlog gauges."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from modelhost.backends.handle import FleetHandle
from modelhost.hosting.asyncq.items import AsyncEndpoint
from modelhost.hosting.metrics import (
    APPROXIMATE_AGE_OF_OLDEST_REQUEST,
    APPROXIMATE_BACKLOG_SIZE,
    APPROXIMATE_BACKLOG_SIZE_PER_INSTANCE,
    HAS_BACKLOG_WITHOUT_CAPACITY,
    AsyncVariantMetrics,
)

FleetsOf = Callable[[str], Sequence[tuple[str, FleetHandle]] | None]


class QueueMetrics:
    def __init__(self) -> None:
        self._variants: dict[tuple[str, str], AsyncVariantMetrics] = {}

    def variant(self, endpoint: str, variant: str) -> AsyncVariantMetrics:
        key = (endpoint, variant)
        m = self._variants.get(key)
        if m is None:
            m = self._variants[key] = AsyncVariantMetrics.for_variant(endpoint, variant)
        return m

    @staticmethod
    def update_gauges(endpoints: Iterable[AsyncEndpoint], fleets_of: FleetsOf) -> None:
        now = time.time()
        for ep in endpoints:
            backlog = ep.backlog
            fleets = fleets_of(ep.name)
            instances = sum(fleet.size for _, fleet in fleets) if fleets is not None else 0
            oldest = min(
                [i.received for i in ep.in_flight.values()] + ([ep.heap[0].received] if ep.heap else []), default=None
            )
            APPROXIMATE_BACKLOG_SIZE.labels(ep.name).set(backlog)
            APPROXIMATE_BACKLOG_SIZE_PER_INSTANCE.labels(ep.name).set(backlog / instances if instances else backlog)
            APPROXIMATE_AGE_OF_OLDEST_REQUEST.labels(ep.name).set(now - oldest if oldest is not None else 0)
            HAS_BACKLOG_WITHOUT_CAPACITY.labels(ep.name).set(1 if backlog and not instances else 0)
