"""Serverless metrics named after SageMaker's: ModelSetupTime (µs per cold start), cold starts, and
ServerlessConcurrentExecutionsUtilization for provisioned variants."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from modelhost.hosting.metrics import LABELS, MICROSECOND_BUCKETS, REGISTRY

MODEL_SETUP_TIME = Histogram(
    "modelhost_model_setup_time_microseconds",
    "Time to launch an instance for a serverless request (ModelSetupTime)",
    LABELS,
    buckets=MICROSECOND_BUCKETS + (120_000_000, 180_000_000),
    registry=REGISTRY,
)
COLD_STARTS = Counter(
    "modelhost_serverless_cold_starts", "Instances started for serverless demand", LABELS, registry=REGISTRY
)
THROTTLED = Counter(
    "modelhost_serverless_throttled_requests", "Requests refused at MaxConcurrency", LABELS, registry=REGISTRY
)
UTILIZATION = Gauge(
    "modelhost_serverless_concurrent_executions_utilization",
    "Requests in flight / ProvisionedConcurrency (ServerlessConcurrentExecutionsUtilization)",
    LABELS,
    registry=REGISTRY,
)
INSTANCES = Gauge("modelhost_serverless_instances", "Instances running or starting", LABELS, registry=REGISTRY)


@dataclass
class ServerlessMetrics:
    setup_time: Histogram
    cold_starts: Counter
    throttled: Counter
    utilization: Gauge
    instances: Gauge

    @classmethod
    def for_variant(cls, owner: str, variant: str) -> ServerlessMetrics:
        labels = (owner, variant)
        return cls(
            MODEL_SETUP_TIME.labels(*labels),
            COLD_STARTS.labels(*labels),
            THROTTLED.labels(*labels),
            UTILIZATION.labels(*labels),
            INSTANCES.labels(*labels),
        )
