"""Prometheus metrics named after SageMaker's CloudWatch endpoint metrics (latencies in µs)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

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

INVOCATIONS = Counter(
    "modelhost_invocations", "Invocations (SageMaker: Invocations)", LABELS, registry=REGISTRY
)
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
