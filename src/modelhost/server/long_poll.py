"""Waits as fast as the resource: a waiting client's ``Describe*`` of a resource in a transitional
state answers when the description changes (or after ``MODELHOST_DESCRIBE_WAIT`` seconds, 20 by
default), which reads to the client as ordinary API latency.

Why: botocore's waiters (``endpoint_in_service``: 30 s between calls; the AWS CLI's ``aws sagemaker
wait``) and the sagemaker SDK's wait loops (``wait_for_endpoint`` every 30 s, transform and processing
jobs every 5 s) poll at cloud pace; modelhost's resources change in seconds, so a client would sleep
up to a whole delay after the resource is ready. Answering the waiting call at the change instead,
the waiter's next check sees the final state at once.

Which calls wait (so a plain ``describe-endpoint`` still shows ``Creating`` at once, as AWS does):
a call a botocore waiter makes (its User-Agent metadata ``m/`` lists feature ``B``, botocore's
``WAITER``), or one from the sagemaker SDK's own clients (``lib/AWS-SageMaker-Python-SDK``, which
describes resources mostly to wait on them). Generic over resources: any top-level ``...Status``
member whose value is transitional (``Creating``, ``InProgress``, ``Stopping``, ...) of any
``Describe*`` operation, so new resources (processing jobs, monitoring schedules, pipelines) are
covered by naming their operation nothing. The description is re-read every ``INTERVAL`` seconds;
any change but modelhost's own progress members ends the wait, and an error on re-reading (the
resource was deleted meanwhile) is the answer, as the next call would have said.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

INTERVAL = 0.1  # seconds between re-reads of the description
TRANSITIONAL = frozenset(
    {
        "Creating",
        "Updating",
        "Deleting",
        "RollingBack",
        "SystemUpdating",
        "UpdateRollbackFailed",
        "Pending",
        "InProgress",
        "Starting",
        "Stopping",
        "Executing",
    }
)
SDK_AGENT = "lib/AWS-SageMaker-Python-SDK"
WAITER_FEATURE = "B"  # botocore.useragent: 'WAITER' -> 'B'


def _features(user_agent: str) -> set[str]:
    """botocore's user-agent feature ids (``m/A,B,E``)."""
    for token in user_agent.split():
        if token.startswith("m/"):
            return set(token[2:].split(","))
    return set()


def is_waiting(user_agent: str | None) -> bool:
    """Does this call come from something that waits on the resource (see the module docstring)?"""
    if not user_agent:
        return False
    return SDK_AGENT in user_agent or WAITER_FEATURE in _features(user_agent)


def transitional(result: dict[str, Any]) -> dict[str, str]:
    """The top-level ``...Status`` members with a transitional value."""
    return {k: v for k, v in result.items() if k.endswith("Status") and isinstance(v, str) and v in TRANSITIONAL}


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    # ModelhostProgress (transform jobs) moves every second while the job runs: not a change to wait for.
    return {k: v for k, v in result.items() if not k.startswith("Modelhost")}


async def until_changed(
    describe: Callable[[], Awaitable[dict[str, Any]]],
    first: dict[str, Any],
    max_wait: float,
    interval: float = INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Re-read the description until it differs from ``first`` or ``max_wait`` has passed; the
    latest description (an ApiError from ``describe`` propagates)."""
    if max_wait <= 0 or not transitional(first):
        return first
    deadline = clock() + max_wait
    before = _comparable(first)
    latest = first
    while clock() < deadline:
        await asyncio.sleep(min(interval, max(0.0, deadline - clock())))
        latest = await describe()
        if _comparable(latest) != before:
            return latest
    return latest


def applies(operation: str, user_agent: str | None, result: dict[str, Any]) -> bool:
    return operation.startswith("Describe") and is_waiting(user_agent) and bool(transitional(result))
