"""What each page shows, gathered through the control plane (the same operations as the API, so the
caller's permissions apply to reading too) and the metrics registry. No second source of truth."""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path
from typing import Any

from modelhost.console.backend import ConsoleBackend, Scope
from modelhost.errors import ApiError
from modelhost.hosting.metrics import REGISTRY

SM = "SageMaker"
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY)", re.I)
MASK = "••••••••"
LOG_LINES = 200


def masked(environment: dict[str, str] | None) -> list[tuple[str, str]]:
    """Environment entries, values of secret-looking names masked."""
    return [(k, MASK if SECRET_NAME.search(k) else v) for k, v in sorted((environment or {}).items())]


def tail(path: Path, lines: int = LOG_LINES) -> tuple[str, int]:
    """The last lines of a log file and its size (the offset the live stream continues from)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(size - 256 * 1024, 0))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "", 0
    return "\n".join(deque(text.splitlines(), maxlen=lines)), size


def read_from(path: Path, offset: int, limit: int = 256 * 1024) -> tuple[str, int]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size < offset:  # rotated or recreated: start again
                offset = 0
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return "", offset
    return data.decode("utf-8", "replace"), offset + len(data)


class Pages:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend

    async def sm(self, scope: Scope, operation: str, **params: Any) -> dict[str, Any]:
        return await self.backend.call(scope, SM, operation, params)

    async def _all(self, scope: Scope, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = await self.sm(scope, operation, MaxResults=100, **params, **({"NextToken": token} if token else {}))
            items += page.get(key, [])
            token = page.get("NextToken")
            if not token or len(items) >= 1000:
                return items

    async def _config(self, scope: Scope, name: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if name not in cache:
            try:
                cache[name] = await self.sm(scope, "DescribeEndpointConfig", EndpointConfigName=name)
            except ApiError:
                cache[name] = {}  # deleted since (the endpoint keeps running its snapshot)
        return cache[name]

    async def endpoints(self, scope: Scope) -> list[dict[str, Any]]:
        configs: dict[str, dict[str, Any]] = {}
        out = []
        for summary in await self._all(scope, "ListEndpoints", "Endpoints", SortBy="Name", SortOrder="Ascending"):
            try:
                desc = await self.sm(scope, "DescribeEndpoint", EndpointName=summary["EndpointName"])
            except ApiError:
                continue  # deleted between the list and the describe
            config = await self._config(scope, desc["EndpointConfigName"], configs)
            out.append(await self._endpoint_row(scope, desc, config))
        return out

    async def _endpoint_row(self, scope: Scope, desc: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        variants = desc.get("ProductionVariants") or desc.get("PendingDeploymentSummary", {}).get(
            "ProductionVariants", []
        )
        kinds = []
        config_variants = config.get("ProductionVariants", [])
        if any("ServerlessConfig" in v for v in config_variants):
            kinds.append("serverless")
        if "AsyncInferenceConfig" in config:
            kinds.append("async")
        for v in config_variants:
            try:
                model = await self.sm(scope, "DescribeModel", ModelName=v["ModelName"])
            except ApiError:
                continue
            if model.get("PrimaryContainer", {}).get("Mode") == "MultiModel":
                kinds.append("multi-model")
                break
        return {"desc": desc, "variants": variants, "kinds": kinds, "config": config}

    async def endpoint(self, scope: Scope, name: str) -> dict[str, Any]:
        desc = await self.sm(scope, "DescribeEndpoint", EndpointName=name)
        configs: dict[str, dict[str, Any]] = {}
        row = await self._endpoint_row(scope, desc, await self._config(scope, desc["EndpointConfigName"], configs))
        pending = desc.get("PendingDeploymentSummary")
        pending_config = (
            await self._config(scope, pending["EndpointConfigName"], configs)
            if pending and pending["EndpointConfigName"] != desc["EndpointConfigName"]
            else None
        )
        row["pending"] = pending
        row["pending_config"] = pending_config
        row["deployment"] = (pending_config or {}).get("DeploymentConfig") or desc.get("LastDeploymentConfig")
        return row

    async def models(self, scope: Scope) -> dict[str, Any]:
        models = []
        for summary in await self._all(scope, "ListModels", "Models", SortBy="Name", SortOrder="Ascending"):
            try:
                model = await self.sm(scope, "DescribeModel", ModelName=summary["ModelName"])
            except ApiError:
                continue
            containers = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
            model["containers"] = [{**c, "environment": masked(c.get("Environment"))} for c in containers]
            models.append(model)
        configs = []
        for summary in await self._all(
            scope, "ListEndpointConfigs", "EndpointConfigs", SortBy="Name", SortOrder="Ascending"
        ):
            try:
                configs.append(
                    await self.sm(scope, "DescribeEndpointConfig", EndpointConfigName=summary["EndpointConfigName"])
                )
            except ApiError:
                continue
        return {"models": models, "configs": configs}

    async def transform_jobs(self, scope: Scope) -> list[dict[str, Any]]:
        jobs = []
        for summary in await self._all(scope, "ListTransformJobs", "TransformJobSummaries", SortBy="CreationTime"):
            try:
                jobs.append(await self.transform_job(scope, summary["TransformJobName"]))
            except ApiError:
                continue
        return jobs

    async def transform_job(self, scope: Scope, name: str) -> dict[str, Any]:
        desc = await self.sm(scope, "DescribeTransformJob", TransformJobName=name)
        p = desc.get("ModelhostProgress") or {}
        total = p.get("ObjectsTotal") or 0
        done = (p.get("ObjectsCompleted") or 0) + (p.get("ObjectsFailed") or 0)
        finished = desc["TransformJobStatus"] in ("Completed", "Failed", "Stopped")
        desc["progress"] = {
            **p,
            "done": done,
            "total": total,
            "percent": 100
            if finished and desc["TransformJobStatus"] == "Completed"
            else (100 * done // total if total else 0),
        }
        return desc

    async def async_queues(self, scope: Scope) -> list[dict[str, Any]]:
        gauges = _samples(
            "modelhost_approximate_backlog_size",
            "modelhost_approximate_age_of_oldest_request_seconds",
            "modelhost_has_backlog_without_capacity",
        )
        failures = _samples(
            "modelhost_async_invocation_failures_total",
            "modelhost_async_request_download_failures_total",
            "modelhost_async_response_upload_failures_total",
            "modelhost_async_expired_requests_total",
            "modelhost_async_notification_failures_total",
            "modelhost_async_invocations_processed_total",
        )
        out = []
        for row in await self.endpoints(scope):
            if "async" not in row["kinds"]:
                continue
            name = row["desc"]["EndpointName"]
            out.append(
                {
                    "name": name,
                    "status": row["desc"]["EndpointStatus"],
                    "config": row["config"].get("AsyncInferenceConfig", {}),
                    "backlog": gauges.get(("modelhost_approximate_backlog_size", name), 0),
                    "oldest": gauges.get(("modelhost_approximate_age_of_oldest_request_seconds", name), 0),
                    "no_capacity": gauges.get(("modelhost_has_backlog_without_capacity", name), 0),
                    "failures": {
                        metric.removeprefix("modelhost_async_").removesuffix("_total"): value
                        for (metric, endpoint), value in failures.items()
                        if endpoint == name
                    },
                }
            )
        return out

    def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        path = self.backend.audit_path
        if path is None:
            return []
        text, _ = tail(path, limit)
        entries = []
        for line in reversed(text.splitlines()):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    async def listing(self, scope: Scope, operation: str, key: str) -> list[dict[str, Any]]:
        """Summaries of another resource family the control plane serves (processing jobs, monitoring schedules)."""
        return await self._all(scope, operation, key)


def _samples(*names: str) -> dict[tuple[str, str], float]:
    """(metric, endpoint) -> value summed over variants, for the named samples in the registry."""
    wanted = set(names)
    out: dict[tuple[str, str], float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name in wanted and "endpoint" in sample.labels:
                key = (sample.name, sample.labels["endpoint"])
                out[key] = out.get(key, 0.0) + sample.value
    return out
