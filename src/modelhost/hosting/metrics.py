"""Prometheus metrics named after SageMaker's CloudWatch endpoint metrics (latencies in µs)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

INVOCATIONS = Counter("modelhost_invocations", "Invocations (SageMaker: Invocations)", LABELS, registry=REGISTRY)
ERRORS_4XX = Counter(
    "modelhost_invocation_4xx_errors",
    "Invocations answered 4xx (Invocation4XXErrors)",
    LABELS,
    registry=REGISTRY,
)
ERRORS_5XX = Counter(
    "modelhost_invocation_5xx_errors",
    "Invocations answered 5xx (Invocation5XXErrors)",
    LABELS,
    registry=REGISTRY,
)
MODEL_LATENCY = Histogram(
    "modelhost_model_latency_microseconds",
    "Time the instance took to answer (ModelLatency)",
    LABELS,
    buckets=MICROSECOND_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD_LATENCY = Histogram(
    "modelhost_overhead_latency_microseconds",
    "Time spent by the platform outside the instance (OverheadLatency)",
    LABELS,
    buckets=MICROSECOND_BUCKETS,
    registry=REGISTRY,
)


@dataclass
class VariantMetrics:
    """Label children resolved once per variant so the hot path skips the label lookup."""

    invocations: Counter
    errors_4xx: Counter
    errors_5xx: Counter
    model_latency: Histogram
    overhead_latency: Histogram

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
