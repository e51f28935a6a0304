"""Multi-model endpoints on the data path: SageMaker's MME metrics (per endpoint and variant), what the
router learns from an answer (affinity warmth, a pipeline's per-container latency and failing
container), and the backends' refusals as domain errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from modelhost.backends.chain import CONTAINER_LATENCIES, FAILED_CONTAINER, parse_latencies
from modelhost.backends.handle import Replica
from modelhost.backends.multimodel import MultiModelRefusal, TargetModelMissing, TargetModelNotReady
from modelhost.hosting.affinity import ModelAffinity
from modelhost.hosting.errors import HostingError, ModelNotReady, TargetModelNotFound
from modelhost.hosting.metrics import LABELS, MICROSECOND_BUCKETS, REGISTRY
from modelhost.hosting.targets import VariantTargets, observe_containers

_TIMES = {
    name: Histogram(
        f"modelhost_{name}_microseconds",
        f"{cw} (multi-model endpoints)",
        LABELS,
        buckets=MICROSECOND_BUCKETS,
        registry=REGISTRY,
    )
    for name, cw in (
        ("model_loading_wait_time", "ModelLoadingWaitTime"),
        ("model_downloading_time", "ModelDownloadingTime"),
        ("model_loading_time", "ModelLoadingTime"),
        ("model_unloading_time", "ModelUnloadingTime"),
    )
}
CACHE_HIT = Counter(
    "modelhost_model_cache_hit", "Requests whose model was already loaded (ModelCacheHit)", LABELS, registry=REGISTRY
)
CACHE_LOOKUPS = Counter(
    "modelhost_model_cache_lookups",
    "Requests to a multi-model endpoint (ModelCacheHit's sample count)",
    LABELS,
    registry=REGISTRY,
)
LOADED_MODEL_COUNT = Gauge(
    "modelhost_loaded_model_count",
    "Models loaded in the variant's instances (LoadedModelCount)",
    LABELS,
    registry=REGISTRY,
)


# (endpoint, variant) -> replica -> models loaded: shared by every fleet of the variant (a blue/green
# update runs two), so LoadedModelCount is their sum and a stopping fleet only takes its own away.
_LOADED: dict[tuple[str, str], dict[str, int]] = {}


@dataclass
class MultiModelMetrics:
    """The MultiModelEvents a variant's replicas report (backends/multimodel.py), as Prometheus metrics."""

    endpoint: str
    variant: str
    per_replica: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        labels = (self.endpoint, self.variant)
        self.per_replica = _LOADED.setdefault(labels, {})
        self._times = {k: h.labels(*labels) for k, h in _TIMES.items()}
        self._hit = CACHE_HIT.labels(*labels)
        self._lookups = CACHE_LOOKUPS.labels(*labels)
        self._count = LOADED_MODEL_COUNT.labels(*labels)

    def cache_hit(self, hit: bool) -> None:
        self._lookups.inc()
        if hit:
            self._hit.inc()

    def loading_wait(self, seconds: float) -> None:
        self._times["model_loading_wait_time"].observe(seconds * 1e6)

    def downloaded(self, seconds: float) -> None:
        self._times["model_downloading_time"].observe(seconds * 1e6)

    def loaded(self, seconds: float) -> None:
        self._times["model_loading_time"].observe(seconds * 1e6)

    def unloaded(self, seconds: float) -> None:
        self._times["model_unloading_time"].observe(seconds * 1e6)

    def loaded_count(self, replica: str, count: int) -> None:
        if count:
            self.per_replica[replica] = count
        else:
            self.per_replica.pop(replica, None)
        self._count.set(sum(self.per_replica.values()))


def multi_model_error(endpoint: str, exc: MultiModelRefusal) -> HostingError:
    if isinstance(exc, TargetModelMissing):
        return TargetModelNotFound(endpoint, exc.bucket, exc.key)
    if isinstance(exc, TargetModelNotReady):
        return ModelNotReady(endpoint, exc.target, exc.waited)
    return HostingError(str(exc))


def after_answer(
    endpoint: str,
    variant: str,
    targets: VariantTargets,
    affinity: ModelAffinity | None,
    replica: Replica,
    headers: dict[bytes, bytes],
    target_model: str | None,
) -> str:
    """Record what an answer says beyond its body; returns the container to name in an error."""
    if affinity is not None and target_model is not None:
        affinity.served(replica, target_model)
    if targets.pipeline:
        latencies = headers.get(CONTAINER_LATENCIES)
        if latencies:
            observe_containers(endpoint, variant, parse_latencies(latencies))
        failed = headers.get(FAILED_CONTAINER)
        if failed is not None:
            return failed.decode("latin-1")
    return "primary"
