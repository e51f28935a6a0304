"""Prometheus metrics named after SageMaker's CloudWatch endpoint metrics (latencies in µs)."""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("endpoint", "variant")
MICROSECOND_BUCKETS = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
)


class LoopCounter:
    """A counter child updated on the event loop only: a plain add, no lock (prometheus_client's
    children take a mutex on every ``inc``; on the invoke path that was measurable)."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopHistogram:
    """A histogram child updated on the event loop only: one bisect and two adds per ``observe``."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le semantics: value <= bound
        self.sum += value


class LoopFamily:
    """A labelled counter or histogram family of Loop* children, exposed through the registry
    with prometheus_client's own sample names (``_total``, ``_bucket``/``_count``/``_sum``)."""

    def __init__(
        self, name: str, doc: str, buckets: tuple[float, ...] | None = None, labelnames: tuple[str, ...] = LABELS
    ) -> None:
        self.name = name
        self.doc = doc
        self.buckets = buckets
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Any] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopCounter() if self.buckets is None else LoopHistogram(self.buckets)
        return child

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> Any:
        if self.buckets is None:
            return CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        return HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        family = self._family()
        for labels, child in list(self.children.items()):
            if isinstance(child, LoopCounter):
                family.add_metric(labels, child.value, created=child.created)
                continue
            cumulative, buckets = 0, []
            for bound, count in zip((*self.buckets, math.inf), child.counts, strict=True):  # type: ignore[misc]
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(labels, buckets, child.sum)
        return [family]


INVOCATIONS = LoopFamily("modelhost_invocations", "Invocations (SageMaker: Invocations)")
ERRORS_4XX = LoopFamily("modelhost_invocation_4xx_errors", "Invocations answered 4xx (Invocation4XXErrors)")
ERRORS_5XX = LoopFamily("modelhost_invocation_5xx_errors", "Invocations answered 5xx (Invocation5XXErrors)")
MODEL_LATENCY = LoopFamily(
    "modelhost_model_latency_microseconds", "Time the instance took to answer (ModelLatency)", MICROSECOND_BUCKETS
)
OVERHEAD_LATENCY = LoopFamily(
    "modelhost_overhead_latency_microseconds",
    "Time spent by the platform outside the instance (OverheadLatency)",
    MICROSECOND_BUCKETS,
)


@dataclass
class VariantMetrics:
    """Label children resolved once per variant so the hot path skips the label lookup."""

    invocations: LoopCounter
    errors_4xx: LoopCounter
    errors_5xx: LoopCounter
    model_latency: LoopHistogram
    overhead_latency: LoopHistogram

    @classmethod
    def for_variant(cls, endpoint: str, variant: str) -> VariantMetrics:
        labels = (endpoint, variant)
        return cls(
            INVOCATIONS.labels(*labels),
            ERRORS_4XX.labels(*labels),
            ERRORS_5XX.labels(*labels),
            MODEL_LATENCY.labels(*labels),
            OVERHEAD_LATENCY.labels(*labels),
        )


# --- asynchronous inference (hosting/asyncq.py; SageMaker's async endpoint and variant metrics) ---

ENDPOINT_LABEL = ("endpoint",)
APPROXIMATE_BACKLOG_SIZE = Gauge(
    "modelhost_approximate_backlog_size",
    "Queued plus in-flight async requests (ApproximateBacklogSize)",
    ENDPOINT_LABEL,
    registry=REGISTRY,
)
APPROXIMATE_BACKLOG_SIZE_PER_INSTANCE = Gauge(
    "modelhost_approximate_backlog_size_per_instance",
    "Backlog divided by the instance count, or the backlog at zero instances (ApproximateBacklogSizePerInstance)",
    ENDPOINT_LABEL,
    registry=REGISTRY,
)
APPROXIMATE_AGE_OF_OLDEST_REQUEST = Gauge(
    "modelhost_approximate_age_of_oldest_request_seconds",
    "Age of the oldest queued or in-flight async request (ApproximateAgeOfOldestRequest)",
    ENDPOINT_LABEL,
    registry=REGISTRY,
)
HAS_BACKLOG_WITHOUT_CAPACITY = Gauge(
    "modelhost_has_backlog_without_capacity",
    "1 when async requests are queued and the endpoint has no instance (HasBacklogWithoutCapacity)",
    ENDPOINT_LABEL,
    registry=REGISTRY,
)
_ASYNC_COUNTERS = {
    name: Counter(f"modelhost_async_{name}", f"Async requests: {cw}", LABELS, registry=REGISTRY)
    for name, cw in (
        ("request_download_failures", "RequestDownloadFailures"),
        ("response_upload_failures", "ResponseUploadFailures"),
        ("notification_failures", "NotificationFailures"),
        ("expired_requests", "ExpiredRequests"),
        ("invocation_failures", "InvocationFailures"),
        ("invocations_processed", "InvocationsProcesssed"),
    )
}
MILLISECOND_BUCKETS = tuple(b / 1000 for b in MICROSECOND_BUCKETS) + (300_000, 900_000, 3_600_000, 21_600_000)
_ASYNC_HISTOGRAMS = {
    name: Histogram(f"modelhost_async_{name}", f"Async requests: {cw}", LABELS, buckets=buckets, registry=REGISTRY)
    for name, cw, buckets in (
        ("request_download_latency_microseconds", "RequestDownloadLatency", MICROSECOND_BUCKETS),
        ("response_upload_latency_microseconds", "ResponseUploadLatency", MICROSECOND_BUCKETS),
        ("time_in_backlog_milliseconds", "TimeInBacklog", MILLISECOND_BUCKETS),
        ("total_processing_time_milliseconds", "TotalProcessingTime", MILLISECOND_BUCKETS),
    )
}


@dataclass
class AsyncVariantMetrics:
    request_download_failures: Counter
    response_upload_failures: Counter
    notification_failures: Counter
    expired_requests: Counter
    invocation_failures: Counter
    invocations_processed: Counter
    request_download_latency: Histogram
    response_upload_latency: Histogram
    time_in_backlog: Histogram
    total_processing_time: Histogram

    @classmethod
    def for_variant(cls, endpoint: str, variant: str) -> AsyncVariantMetrics:
        c = {k: v.labels(endpoint, variant) for k, v in _ASYNC_COUNTERS.items()}
        h = {k: v.labels(endpoint, variant) for k, v in _ASYNC_HISTOGRAMS.items()}
        return cls(
            c["request_download_failures"],
            c["response_upload_failures"],
            c["notification_failures"],
            c["expired_requests"],
            c["invocation_failures"],
            c["invocations_processed"],
            h["request_download_latency_microseconds"],
            h["response_upload_latency_microseconds"],
            h["time_in_backlog_milliseconds"],
            h["total_processing_time_milliseconds"],
        )
