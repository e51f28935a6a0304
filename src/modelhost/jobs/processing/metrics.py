"""Model Monitor's per-feature metrics on ``/metrics``, under CloudWatch's names
(``feature_baseline_drift_<feature>``, ``feature_non_null_<feature>``, ``feature_data_<feature>``),
labelled by endpoint and schedule: the latest monitoring execution's values."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelhost.hosting.metrics import REGISTRY

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class MonitoringMetrics(Collector):
    def __init__(self) -> None:
        self._values: dict[tuple[str, str], dict[str, float]] = {}  # (endpoint, schedule) -> metric -> value
        self._lock = threading.Lock()

    def publish(self, endpoint: str, schedule: str, metrics: dict[str, float]) -> None:
        with self._lock:
            self._values[(endpoint, schedule)] = dict(metrics)

    def publish_file(self, path: Path) -> None:
        """The analyzer's ``metrics.jsonl`` (one CloudWatch datum per line)."""
        found: dict[tuple[str, str], dict[str, float]] = {}
        for line in path.read_text().splitlines():
            datum = json.loads(line)
            dims = datum.get("Dimensions", {})
            key = (dims.get("Endpoint", ""), dims.get("MonitoringSchedule", ""))
            found.setdefault(key, {})[datum["MetricName"]] = float(datum["Value"])
        for (endpoint, schedule), metrics in found.items():
            self.publish(endpoint, schedule, metrics)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot = {k: dict(v) for k, v in self._values.items()}
        families: dict[str, GaugeMetricFamily] = {}
        for (endpoint, schedule), metrics in snapshot.items():
            for name, value in metrics.items():
                metric = _NAME.sub("_", name)
                family = families.get(metric)
                if family is None:
                    family = families[metric] = GaugeMetricFamily(
                        metric, f"Model Monitor {name.split('_')[1]} metric", labels=["endpoint", "schedule"]
                    )
                family.add_metric([endpoint, schedule], value)
        yield from families.values()


MONITORING_METRICS = MonitoringMetrics()
REGISTRY.register(MONITORING_METRICS)
