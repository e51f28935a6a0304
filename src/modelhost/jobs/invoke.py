"""One batch sent to one instance: ``POST /invocations`` with the job's retries and timeout; an
instance that timed out is recycled, one that failed is waited for until it is healthy again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.http import ConnectError, ConnectionLost, HttpResponse, RequestTimeout
from modelhost.backends.local.instances import Instance
from modelhost.jobs.batching import Batch
from modelhost.jobs.params import ExecutionParameters
from modelhost.store.logs import PLATFORM, EndpointLog


class ObjectFailed(Exception):
    """One input object cannot be transformed; the message names the cause (not the object)."""


def request_headers(spec: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    tin, tout = spec["TransformInput"], spec["TransformOutput"]
    headers: list[tuple[bytes, bytes]] = []
    if tin.get("ContentType"):
        headers.append((b"content-type", tin["ContentType"].encode("latin-1")))
    if tout.get("Accept"):
        headers.append((b"accept", tout["Accept"].encode("latin-1")))
    return headers


def records_of(batch: Batch) -> str:
    return f"record {batch.first + 1}" if batch.count == 1 else f"records {batch.first + 1}-{batch.first + batch.count}"


async def invoke(
    fleet: Fleet,
    inst: Instance,
    batch: Batch,
    headers: list[tuple[bytes, bytes]],
    params: ExecutionParameters,
    log: EndpointLog,
) -> HttpResponse:
    what = records_of(batch)
    error = ""
    for attempt in range(params.retries + 1):
        if attempt:
            log.write(PLATFORM, f"{what}: retrying ({attempt}/{params.retries}) after: {error[:300]}")
        await wait_healthy(inst)
        assert inst.client is not None
        inst.outstanding += 1
        try:
            response = await inst.client.request(b"POST", b"/invocations", headers, batch.body, params.timeout)
        except RequestTimeout:
            error = f"the model did not answer within InvocationsTimeoutInSeconds ({params.timeout:g})"
            fleet.recycle(inst)
            continue
        except (ConnectError, ConnectionLost) as exc:
            error = f"the instance failed: {exc}"
            continue
        finally:
            inst.outstanding -= 1
        if 200 <= response.status < 300:
            return response
        body = response.body.decode("utf-8", "replace").strip()
        error = f"the model returned HTTP {response.status}: {body[:500]}"
    raise ObjectFailed(f"{what}: {error}")


async def wait_healthy(inst: Instance) -> None:
    if inst.healthy:
        return
    deadline = time.monotonic() + inst.spec.startup_timeout
    while not inst.healthy:
        if time.monotonic() > deadline:
            raise ObjectFailed(f"instance {inst.name} did not become healthy again after a failure")
        await asyncio.sleep(0.1)
