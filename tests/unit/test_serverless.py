"""The serverless gate over a fake fleet (held cold starts, single flight, MaxConcurrency, failed
starts, idle scale-in, payload limit) and the pure serverless / Lambda rules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.backends.handle import FleetRequest
from modelhost.hosting.errors import ColdStartFailed, PayloadTooLarge, Throttled
from modelhost.hosting.serverless import ServerlessBackend, ServerlessFleet
from modelhost.resources import functions as fn_rules
from modelhost.resources.serverless import (
    FleetLoad,
    ServerlessConfig,
    config_refusal,
    scale_in_target,
    variant_refusal,
    wants_instance,
)
from modelhost.store.logs import EndpointLog
from tests.unit.fakes import FakeBackend, FakeFleet


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EndpointLog]:
    endpoint_log = EndpointLog(tmp_path / "logs", "ep")
    yield endpoint_log
    endpoint_log.close()


def test_provisioned_count_and_the_cold_start_limit_reach_the_backend(log: EndpointLog) -> None:
    async def body() -> None:
        backend = FakeBackend()
        sl = ServerlessBackend(backend, idle_seconds=1.0, cold_start_limit=42.0)
        request = FleetRequest(
            "ep",
            "v",
            {"PrimaryContainer": {"Image": "modelhost/python"}},
            5,
            log,
            "Variant v",
            serverless=ServerlessConfig(1024, 4, 2),
        )
        gate = await sl.create_fleet(request)
        assert isinstance(gate, ServerlessFleet)
        assert backend.requests[0].count == 2 and backend.requests[0].startup_timeout == 42.0
        plain = await sl.create_fleet(
            FleetRequest("ep", "w", {"PrimaryContainer": {"Image": "modelhost/python"}}, 3, log, "Variant w")
        )
        assert isinstance(plain, FakeFleet) and plain.size == 3

    asyncio.run(body())


async def _gate(log: EndpointLog, config: ServerlessConfig, limit: float = 5.0) -> tuple[ServerlessFleet, FakeFleet]:
    backend = FakeBackend()
    sl = ServerlessBackend(backend, idle_seconds=0.0, cold_start_limit=limit)
    request = FleetRequest(
        "ep",
        "AllTraffic",
        {"PrimaryContainer": {"Image": "modelhost/python"}},
        1,
        log,
        "Variant AllTraffic",
        serverless=config,
    )
    gate = await sl.create_serverless(request, max_payload=10)
    await gate.start()
    return gate, backend.fleets[0]


def test_cold_requests_are_held_and_share_one_start(log: EndpointLog) -> None:
    async def body() -> None:
        gate, inner = await _gate(log, ServerlessConfig(1024, 2))
        assert inner.size == 0 and gate.acquire_now() is None
        first, second = await asyncio.gather(gate.acquire(0), gate.acquire(0))
        assert first is not None and second is not None and first is not second
        # One start at a time: the first cold start, then one more for the request still waiting.
        assert [c for c, _ in inner.scale_calls] == [1, 2]
        assert gate.in_flight == 2
        gate.release(first)
        gate.release(second)
        assert gate.in_flight == 0
        assert gate.metrics.cold_starts._value.get() == 2  # type: ignore[attr-defined]

    asyncio.run(body())


def test_max_concurrency_throttles_the_excess(log: EndpointLog) -> None:
    async def body() -> None:
        gate, _inner = await _gate(log, ServerlessConfig(1024, 1))
        held = await gate.acquire(0)
        assert held is not None
        with pytest.raises(Throttled) as info:
            await gate.acquire(0)
        assert info.value.limit == 1
        gate.release(held)
        again = gate.acquire_now()  # warm now: taken without a start
        assert again is held
        gate.release(again)

    asyncio.run(body())


def test_a_failed_cold_start_fails_its_waiters_with_the_reason(log: EndpointLog) -> None:
    async def body() -> None:
        gate, inner = await _gate(log, ServerlessConfig(1024, 2))
        inner.scale_error = "model_fn raised KeyError"
        with pytest.raises(ColdStartFailed) as info:
            await gate.acquire(0)
        assert "model_fn raised KeyError" in info.value.message
        assert gate.in_flight == 0
        inner.scale_error = None
        replica = await gate.acquire(0)  # the next request tries again
        assert replica is not None

    asyncio.run(body())


def test_a_cold_start_over_the_limit_is_a_model_error(log: EndpointLog) -> None:
    async def body() -> None:
        gate, inner = await _gate(log, ServerlessConfig(1024, 1), limit=0.3)

        async def slow(count: int, drain_timeout: float) -> None:
            await asyncio.sleep(5)

        inner.scale_to = slow  # type: ignore[method-assign]
        with pytest.raises(ColdStartFailed) as info:
            await gate.acquire(0)
        assert "did not complete within 0.3 seconds" in info.value.message
        await gate.stop(0)

    asyncio.run(body())


def test_idle_fleets_scale_back_to_provisioned(log: EndpointLog) -> None:
    async def body() -> None:
        gate, inner = await _gate(log, ServerlessConfig(1024, 3, 1))
        assert inner.size == 1
        a = gate.acquire_now()
        b = await gate.acquire(0)
        assert a is not None and b is not None and inner.size == 2
        await gate.scale_idle(0.0)
        assert inner.size == 2, "busy: not scaled in"
        gate.release(a)
        gate.release(b)
        await gate.scale_idle(60.0)
        assert inner.size == 2, "not idle long enough"
        await gate.scale_idle(0.0)
        assert inner.size == 1, "never below ProvisionedConcurrency"

    asyncio.run(body())


def test_payload_limit(log: EndpointLog) -> None:
    async def body() -> None:
        gate, _ = await _gate(log, ServerlessConfig(1024, 1))
        replica = await gate.acquire(0)
        assert replica is not None
        with pytest.raises(PayloadTooLarge):
            await gate.invoke(replica, [], b"x" * 11, 1.0)
        resp = await gate.invoke(replica, [], b"ok", 1.0)
        assert resp.status == 200
        gate.release(replica)

    asyncio.run(body())


def test_variant_rules() -> None:
    ok = {"VariantName": "v", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}
    assert variant_refusal(ok) is None
    assert "memorySizeInMB" in str(
        variant_refusal({"VariantName": "v", "ServerlessConfig": {"MemorySizeInMB": 512, "MaxConcurrency": 1}})
    )
    assert "maxConcurrency" in str(
        variant_refusal({"VariantName": "v", "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 0}})
    )
    over = {
        "VariantName": "v",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3},
    }
    assert "ProvisionedConcurrency" in str(variant_refusal(over))
    models = {"m": {"PrimaryContainer": {"Mode": "MultiModel"}}, "p": {"Containers": [{}, {}]}}
    sl = {"VariantName": "a", "ModelName": "m", "ServerlessConfig": ok["ServerlessConfig"]}
    assert "Multi-model" in str(config_refusal({"ProductionVariants": [sl]}, models))
    assert "pipelines" in str(config_refusal({"ProductionVariants": [{**sl, "ModelName": "p"}]}, models))
    assert "AsyncInferenceConfig" in str(
        config_refusal({"ProductionVariants": [sl], "AsyncInferenceConfig": {"x": 1}}, {})
    )
    assert config_refusal({"ProductionVariants": [{"VariantName": "i", "ModelName": "m"}]}, models) is None


def test_scaling_decisions() -> None:
    assert scale_in_target(FleetLoad(size=2, in_flight=0, idle_for=10, provisioned=0), 5) == 0
    assert scale_in_target(FleetLoad(size=2, in_flight=1, idle_for=10, provisioned=0), 5) is None
    assert scale_in_target(FleetLoad(size=1, in_flight=0, idle_for=10, provisioned=1), 5) is None
    assert scale_in_target(FleetLoad(size=3, in_flight=0, idle_for=1, provisioned=0), 5) is None
    assert wants_instance(waiting=1, idle_instances=0, starting=False, size=0, max_concurrency=2)
    assert not wants_instance(waiting=1, idle_instances=0, starting=True, size=0, max_concurrency=2)
    assert not wants_instance(waiting=1, idle_instances=1, starting=False, size=1, max_concurrency=2)
    assert not wants_instance(waiting=3, idle_instances=0, starting=False, size=2, max_concurrency=2)


def test_lambda_rules() -> None:
    assert "memorySize" in str(fn_rules.config_refusal({"MemorySize": 64}))
    assert "timeout" in str(fn_rules.config_refusal({"Timeout": 901}))
    assert fn_rules.config_refusal({"MemorySize": 512, "Timeout": 30}) is None
    assert "AWS_REGION" in str(fn_rules.parameter_refusal({"Environment": {"Variables": {"AWS_REGION": "x"}}}))
    assert "java21" in str(fn_rules.parameter_refusal({"Runtime": "java21"}))
    assert "module.function" in str(fn_rules.parameter_refusal({"Handler": "nodot"}))
    assert fn_rules.parameter_refusal({"Runtime": "python3.12", "Handler": "a.b"}) is None
