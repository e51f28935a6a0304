"""The routing table and the real-time invoke path.

endpoint -> variant (by weight, or TargetVariant) -> least busy healthy instance -> its
/invocations over a unix socket. The table is in memory and published by the reconciler: a
request never touches the database or the file system.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from dataclasses import dataclass, field

from modelhost.backends.handle import FleetHandle, ReplicaLost, ReplicaTimeout, ReplicaUnreachable
from modelhost.backends.multimodel import MultiModelRefusal
from modelhost.hosting.affinity import ModelAffinity
from modelhost.hosting.capture import DataCapture
from modelhost.hosting.errors import (
    EndpointNotFound,
    ModelFailed,
    ModelLost,
    ModelTimedOut,
    NoCapacity,
    VariantNotFound,
)
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.multimodel import after_answer, multi_model_error
from modelhost.hosting.targets import PLAIN, VariantTargets, check_targets, find_targets

SHADOW_MAX_IN_FLIGHT = 64  # shadow copies beyond this are dropped (counted), never queued


@dataclass
class VariantRoute:
    name: str
    weight: float
    fleet: FleetHandle
    timeout: float  # SAGEMAKER_MODEL_SERVER_TIMEOUT of the variant's model, default 60 s
    log_stream_arn: str
    metrics: VariantMetrics
    targets: VariantTargets = PLAIN  # multi-model / pipeline addressing (hosting/targets.py)
    affinity: ModelAffinity | None = None  # multi-model endpoints: a model's requests to its instance


@dataclass
class EndpointRoute:
    """One deployed config's variants. During a blue/green update the live (blue) route points
    at the new config's route as ``green`` and sends it ``green_share`` of the traffic."""

    name: str
    variants: list[VariantRoute]
    shadow: VariantRoute | None = None
    shadow_share: float = 0.0
    green: EndpointRoute | None = None
    green_share: float = 0.0
    by_name: dict[str, VariantRoute] = field(init=False)
    cumulative: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {v.name: v for v in self.variants}
        total, self.cumulative = 0.0, []
        for v in self.variants:
            total += v.weight
            self.cumulative.append(total)

    def choose(self) -> VariantRoute:
        if len(self.variants) == 1:
            return self.variants[0]
        total = self.cumulative[-1]
        if total <= 0:  # every weight is 0: SageMaker still serves; spread evenly
            return random.choice(self.variants)
        return self.variants[bisect.bisect_right(self.cumulative, random.random() * total)]


@dataclass
class InvokeResult:
    body: bytes
    content_type: str
    variant: VariantRoute
    custom_attributes: str | None
    model_latency_us: float


class Router:
    def __init__(self, instance_wait: float, capture: DataCapture | None = None) -> None:
        self.routes: dict[str, EndpointRoute] = {}
        self.instance_wait = instance_wait
        self.shadow_in_flight = 0
        self.shadow_dropped = 0
        self._shadow_tasks: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak refs)
        self.capture = capture  # data capture (hosting/capture/): offered every answered request

    def publish(self, route: EndpointRoute) -> None:
        self.routes[route.name] = route

    def withdraw(self, endpoint: str) -> None:
        self.routes.pop(endpoint, None)

    def fleets(self, endpoint: str) -> list[tuple[str, FleetHandle]] | None:
        """(variant name, fleet) of the endpoint's live route, in config order; None when it is not routed."""
        route = self.routes.get(endpoint)
        if route is None:
            return None
        return [(v.name, v.fleet) for v in route.variants]

    async def invoke(
        self,
        endpoint: str,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        target_variant: str | None = None,
    ) -> InvokeResult:
        """Send one request; ``headers`` are the ones forwarded to the container (lower-case)."""
        live, variant = self.select(endpoint, target_variant)
        target_model, target_container = find_targets(headers)
        if target_model is not None or target_container is not None or not variant.targets.plain:
            check_targets(endpoint, variant.targets, target_model, target_container)
        result = await self._invoke_variant(endpoint, variant, body, headers, target_model)
        if self.capture is not None:
            self.capture.offer(endpoint, variant.name, body, headers, result.body, result.content_type)
        shadow = live.shadow
        if shadow is not None and (live.shadow_share >= 1.0 or random.random() < live.shadow_share):
            # The copy runs after the live response is produced and never affects it.
            if self.shadow_in_flight < SHADOW_MAX_IN_FLIGHT:
                self.shadow_in_flight += 1
                task = asyncio.get_running_loop().create_task(self._shadow(endpoint, shadow, body, headers))
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)
            else:
                self.shadow_dropped += 1
        return result

    def select(self, endpoint: str, target_variant: str | None = None) -> tuple[EndpointRoute, VariantRoute]:
        """(the live route, the variant this request goes to): TargetVariant, else by weight (and green share)."""
        route = self.routes.get(endpoint)
        if route is None:
            raise EndpointNotFound(endpoint)
        live = route
        green = route.green
        if green is not None and (route.green_share >= 1.0 or random.random() < route.green_share):
            route = green
        if target_variant is None:
            return live, route.choose()
        variant = route.by_name.get(target_variant)
        if variant is None and green is not None:
            variant = (live if route is green else green).by_name.get(target_variant)
        if variant is None:
            raise VariantNotFound(endpoint, target_variant, tuple(route.by_name))
        return live, variant

    async def _invoke_variant(
        self,
        endpoint: str,
        variant: VariantRoute,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        target_model: str | None = None,
    ) -> InvokeResult:
        variant.metrics.invocations.inc()
        stats = variant.fleet.stats
        stats.requests += 1
        try:
            return await self._send(endpoint, variant, body, headers, target_model)
        except ModelFailed as exc:
            # CloudWatch counts by the model's own status: 4xx from the model vs 5xx (or no answer).
            if 400 <= exc.status < 500:
                variant.metrics.errors_4xx.inc()
                stats.errors_4xx += 1
            else:
                variant.metrics.errors_5xx.inc()
                stats.errors_5xx += 1
            raise
        except NoCapacity:
            variant.metrics.errors_5xx.inc()
            stats.errors_5xx += 1
            raise

    async def _shadow(
        self, endpoint: str, shadow: VariantRoute, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        try:
            await self._invoke_variant(endpoint, shadow, body, headers)
        except Exception as exc:  # a shadow's failure is recorded, never surfaced
            shadow.fleet.log.write(f"{shadow.name}/shadow", f"shadow request failed: {exc}")
        finally:
            self.shadow_in_flight -= 1

    async def _send(
        self,
        endpoint: str,
        variant: VariantRoute,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        target_model: str | None = None,
    ) -> InvokeResult:
        fleet = variant.fleet
        tried = 0
        affinity = variant.affinity if target_model is not None else None
        while True:
            inst = (affinity.pick(fleet, target_model) if affinity is not None and target_model else None) or (
                fleet.acquire_now() or await fleet.acquire(self.instance_wait)
            )
            if inst is None:
                raise NoCapacity(endpoint, variant.name)
            started = time.perf_counter()
            try:
                resp = await fleet.invoke(inst, headers, body, variant.timeout)
            except ReplicaUnreachable:
                # Nothing reached the instance (it is restarting): safe to try another one.
                fleet.mark_unreachable(inst)
                tried += 1
                if tried > fleet.size:
                    raise NoCapacity(endpoint, variant.name) from None
                continue
            except ReplicaTimeout:
                fleet.recycle(inst)
                raise ModelTimedOut(endpoint, variant.name, variant.timeout, variant.log_stream_arn) from None
            except ReplicaLost as exc:
                raise ModelLost(endpoint, variant.name, str(exc), variant.log_stream_arn) from None
            except MultiModelRefusal as exc:
                raise multi_model_error(endpoint, exc) from None
            finally:
                fleet.release(inst)
            latency_us = (time.perf_counter() - started) * 1e6
            variant.metrics.model_latency.observe(latency_us)
            fleet.stats.observe(latency_us)
            container = "primary"
            if not variant.targets.plain:
                container = after_answer(
                    endpoint, variant.name, variant.targets, variant.affinity, inst, resp.headers, target_model
                )
            if resp.status >= 300:
                raise ModelFailed(
                    endpoint,
                    variant.name,
                    resp.status,
                    resp.body.decode("utf-8", "replace"),
                    variant.log_stream_arn,
                    container,
                )
            custom = resp.headers.get(b"x-amzn-sagemaker-custom-attributes")
            return InvokeResult(
                resp.body,
                resp.headers.get(b"content-type", b"application/octet-stream").decode("latin-1"),
                variant,
                custom.decode("latin-1") if custom is not None else None,
                latency_us,
            )
