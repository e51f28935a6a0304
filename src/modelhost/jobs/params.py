"""A job's execution parameters: request > container (``GET /execution-parameters``) > defaults
(MultiRecord, 6 MB, 1), and the batch variables its instances are started with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelhost.backends.local.http import ConnectError, ConnectionLost, RequestTimeout
from modelhost.backends.local.instances import Instance
from modelhost.jobs.batching import MB
from modelhost.store.logs import PLATFORM, EndpointLog

DEFAULT_PAYLOAD_MB = 6
DEFAULT_CONCURRENCY = 1
DEFAULT_STRATEGY = "MultiRecord"
DEFAULT_TIMEOUT = 600
DEFAULT_RETRIES = 3
STRATEGY_ENV = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
STRATEGY_FROM_ENV = {v: k for k, v in STRATEGY_ENV.items()}


@dataclass
class ExecutionParameters:
    strategy: str
    payload_mb: int
    concurrency: int
    timeout: float
    retries: int

    @property
    def limit(self) -> int | None:
        return self.payload_mb * MB if self.payload_mb > 0 else None

    def describe(self) -> str:
        return (
            f"BatchStrategy={self.strategy} MaxPayloadInMB={self.payload_mb} MaxConcurrentTransforms="
            f"{self.concurrency} InvocationsTimeoutInSeconds={self.timeout:g} InvocationsMaxRetries={self.retries}"
        )


def batch_env(spec: dict[str, Any]) -> dict[str, str]:
    """The job's Environment plus SAGEMAKER_BATCH and the batch variables the request set."""
    env = dict(spec.get("Environment") or {})
    env["SAGEMAKER_BATCH"] = "true"
    if spec.get("MaxPayloadInMB") is not None:
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(spec["MaxPayloadInMB"])
    if spec.get("BatchStrategy"):
        env["SAGEMAKER_BATCH_STRATEGY"] = STRATEGY_ENV[spec["BatchStrategy"]]
    if spec.get("MaxConcurrentTransforms"):
        env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(spec["MaxConcurrentTransforms"])
    return env


def needs_container(spec: dict[str, Any]) -> bool:
    """Whether the request left something for the container to say."""
    return (
        spec.get("BatchStrategy") is None
        or spec.get("MaxPayloadInMB") is None
        or not spec.get("MaxConcurrentTransforms")
    )


def resolve(spec: dict[str, Any], container: dict[str, Any]) -> ExecutionParameters:
    """The parameters from the request, then what the container said, then the defaults."""
    strategy = spec.get("BatchStrategy")
    payload_mb = spec.get("MaxPayloadInMB")
    concurrency = spec.get("MaxConcurrentTransforms") or None
    if strategy is None:
        strategy = STRATEGY_FROM_ENV.get(str(container.get("BatchStrategy", "")).upper())
    if payload_mb is None and isinstance(container.get("MaxPayloadInMB"), int):
        payload_mb = container["MaxPayloadInMB"]
    if concurrency is None and isinstance(container.get("MaxConcurrentTransforms"), int):
        concurrency = container["MaxConcurrentTransforms"]
    strategy = strategy or DEFAULT_STRATEGY
    payload_mb = DEFAULT_PAYLOAD_MB if payload_mb is None else max(0, min(int(payload_mb), 100))
    concurrency = max(1, int(concurrency or DEFAULT_CONCURRENCY))
    if payload_mb and concurrency * payload_mb > 100:
        concurrency = max(1, 100 // payload_mb)
    mcc = spec.get("ModelClientConfig") or {}
    return ExecutionParameters(
        strategy,
        payload_mb,
        concurrency,
        float(mcc.get("InvocationsTimeoutInSeconds", DEFAULT_TIMEOUT)),
        int(mcc.get("InvocationsMaxRetries", DEFAULT_RETRIES)),
    )


async def ask_container(inst: Instance, log: EndpointLog) -> dict[str, Any]:
    """``GET /execution-parameters`` ({} when the container does not answer it)."""
    assert inst.client is not None
    try:
        response = await inst.client.request(b"GET", b"/execution-parameters", [], b"", 5.0)
    except (ConnectError, ConnectionLost, RequestTimeout):
        return {}
    if response.status != 200:
        return {}
    try:
        doc = json.loads(response.body)
    except ValueError:
        return {}
    if isinstance(doc, dict):
        log.write(PLATFORM, f"/execution-parameters: {json.dumps(doc)}")
        return doc
    return {}


async def execution_parameters(spec: dict[str, Any], inst: Instance, log: EndpointLog) -> ExecutionParameters:
    container = await ask_container(inst, log) if needs_container(spec) else {}
    return resolve(spec, container)
