"""The routing table and the real-time invoke path (hosting/router.py) over fake fleets: weights,
TargetVariant, the blue/green share, least-outstanding replica choice, retries and recycling,
error accounting and shadow copies. Errors are the data plane's domain errors (hosting/errors.py)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.backends.handle import ReplicaLost, ReplicaResponse, ReplicaTimeout, ReplicaUnreachable
from modelhost.hosting import router as router_module
from modelhost.hosting.errors import (
    EndpointNotFound,
    ModelFailed,
    ModelLost,
    ModelTimedOut,
    NoCapacity,
    VariantNotFound,
)
from modelhost.hosting.metrics import VariantMetrics
from modelhost.hosting.router import EndpointRoute, Router, VariantRoute
from modelhost.store.logs import EndpointLog
from tests.unit import fakes
from tests.unit.fakes import FakeFleet, FakeReplica

EP = "ep"
ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ep"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EndpointLog]:
    endpoint_log = EndpointLog(tmp_path / "logs", EP)
    yield endpoint_log
    endpoint_log.close()


def fleet(log: EndpointLog, name: str, count: int = 1) -> FakeFleet:
    f = FakeFleet(fakes.fleet_request(name, count, log))
    for r in f.replicas():
        r.healthy = True
    return f


def vroute(f: FakeFleet, weight: float = 1.0, timeout: float = 60.0) -> VariantRoute:
    return VariantRoute(f.variant, weight, f, timeout, ARN, VariantMetrics.for_variant(EP, f.variant))


def route(*variants: VariantRoute) -> EndpointRoute:
    return EndpointRoute(EP, list(variants))


def routed(r: EndpointRoute, instance_wait: float = 0.05) -> Router:
    router = Router(instance_wait=instance_wait)
    router.publish(r)
    return router


def status(code: int, body: bytes = b"") -> fakes.Responder:
    def respond(replica: FakeReplica, headers: object, _body: bytes, timeout: float) -> ReplicaResponse:
        return ReplicaResponse(code, {b"content-type": b"text/plain"}, body)

    return respond


def raising(exc: Exception, only: str | None = None) -> fakes.Responder:
    def respond(replica: FakeReplica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> object:
        if only is None or replica.name == only:
            raise exc
        return fakes.echo(replica, headers, body, timeout)

    return respond


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


# --- the table


def test_publish_withdraw_and_fleets(log: EndpointLog) -> None:
    a, b = fleet(log, "A"), fleet(log, "B")
    router = routed(route(vroute(a), vroute(b)))
    assert router.fleets(EP) == [("A", a), ("B", b)]
    router.withdraw(EP)
    assert router.fleets(EP) is None
    router.withdraw(EP)  # withdrawing twice is harmless

    async def body() -> None:
        with pytest.raises(EndpointNotFound) as exc:
            await router.invoke(EP, b"{}", [])
        assert exc.value.endpoint == EP

    run(body())


def test_successful_invoke_passes_headers_body_and_timeout(log: EndpointLog) -> None:
    a = fleet(log, "A")
    seen: list[tuple[list[tuple[bytes, bytes]], bytes, float]] = []

    def respond(replica: FakeReplica, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> object:
        seen.append((headers, body, timeout))
        return ReplicaResponse(
            200,
            {b"content-type": b"text/csv", b"x-amzn-sagemaker-custom-attributes": b"trace=1"},
            b"1,2,3",
        )

    a.responder = respond
    router = routed(route(vroute(a, timeout=12.0)))

    async def body() -> None:
        headers = [(b"content-type", b"application/json")]
        result = await router.invoke(EP, b'{"x": 1}', headers)
        assert (result.body, result.content_type, result.custom_attributes) == (b"1,2,3", "text/csv", "trace=1")
        assert result.variant.name == "A"
        assert result.model_latency_us >= 0
        assert seen == [(headers, b'{"x": 1}', 12.0)]
        assert a.stats.requests == 1 and (a.stats.errors_4xx, a.stats.errors_5xx) == (0, 0)
        assert len(a.stats.latencies) == 1
        assert [r.outstanding for r in a.replicas()] == [0]  # released

        a.responder = lambda *_: ReplicaResponse(200, {}, b"raw")
        plain = await router.invoke(EP, b"", [])
        assert plain.content_type == "application/octet-stream" and plain.custom_attributes is None

    run(body())


# --- weights


def test_weights_distribute_requests(log: EndpointLog) -> None:
    a, b = fleet(log, "A"), fleet(log, "B")
    r = route(vroute(a, 3.0), vroute(b, 1.0))
    random.seed(1234)
    picks = Counter(r.choose().name for _ in range(8000))
    assert picks["A"] / 8000 == pytest.approx(0.75, abs=0.02)

    router = routed(r)

    async def body() -> None:
        random.seed(99)
        results = [await router.invoke(EP, b"x", []) for _ in range(400)]
        served = Counter(res.variant.name for res in results)
        assert served["A"] + served["B"] == 400
        assert served["A"] / 400 == pytest.approx(0.75, abs=0.07)
        assert (len(a.invocations), len(b.invocations)) == (served["A"], served["B"])
        assert (a.stats.requests, b.stats.requests) == (served["A"], served["B"])

    run(body())


def test_zero_weight_variant_gets_nothing(log: EndpointLog) -> None:
    r = route(vroute(fleet(log, "A"), 0.0), vroute(fleet(log, "B"), 1.0), vroute(fleet(log, "C"), 0.0))
    random.seed(7)
    assert {r.choose().name for _ in range(2000)} == {"B"}


def test_all_zero_weights_still_serve_evenly(log: EndpointLog) -> None:
    r = route(vroute(fleet(log, "A"), 0.0), vroute(fleet(log, "B"), 0.0))
    random.seed(3)
    picks = Counter(r.choose().name for _ in range(4000))
    assert picks["A"] / 4000 == pytest.approx(0.5, abs=0.03)
    single = route(vroute(fleet(log, "Only"), 0.0))
    assert single.choose().name == "Only"


# --- TargetVariant


def test_target_variant(log: EndpointLog) -> None:
    a, b = fleet(log, "A"), fleet(log, "B")
    router = routed(route(vroute(a, 1.0), vroute(b, 0.0)))

    async def body() -> None:
        for _ in range(5):
            assert (await router.invoke(EP, b"x", [], target_variant="B")).variant.name == "B"
        assert len(b.invocations) == 5 and a.invocations == []
        with pytest.raises(VariantNotFound) as exc:
            await router.invoke(EP, b"x", [], target_variant="b")  # names are exact
        assert exc.value.variant == "b"
        assert exc.value.valid == ("A", "B")
        assert exc.value.endpoint == EP
        assert "A" in str(exc.value) and "B" in str(exc.value)
        assert a.stats.requests == 0 and b.stats.requests == 5  # the refused request never counted

    run(body())


# --- blue/green share


def blue_green(log: EndpointLog, share: float) -> tuple[Router, FakeFleet, FakeFleet, FakeFleet]:
    blue = fleet(log, "AllTraffic")
    green = fleet(log, "AllTraffic")
    green_only = fleet(log, "NewVariant")
    live = route(vroute(blue))
    live.green = route(vroute(green), vroute(green_only, 0.0))
    live.green_share = share
    return routed(live), blue, green, green_only


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_green_share_all_or_nothing(log: EndpointLog, share: float) -> None:
    router, blue, green, _ = blue_green(log, share)

    async def body() -> None:
        random.seed(5)
        for _ in range(50):
            await router.invoke(EP, b"x", [])
        assert (len(blue.invocations), len(green.invocations)) == ((50, 0) if share == 0.0 else (0, 50))

    run(body())


def test_green_share_sends_that_fraction_to_green(log: EndpointLog) -> None:
    router, blue, green, _ = blue_green(log, 0.25)

    async def body() -> None:
        random.seed(11)
        for _ in range(800):
            await router.invoke(EP, b"x", [])
        assert len(blue.invocations) + len(green.invocations) == 800
        assert len(green.invocations) / 800 == pytest.approx(0.25, abs=0.05)

    run(body())


def test_target_variant_during_a_shift_finds_either_side(log: EndpointLog) -> None:
    router, blue, green, green_only = blue_green(log, 0.0)

    async def body() -> None:
        # A variant only the new config has is still reachable while all traffic is on blue.
        result = await router.invoke(EP, b"x", [], target_variant="NewVariant")
        assert result.variant.fleet is green_only
        assert (await router.invoke(EP, b"x", [], target_variant="AllTraffic")).variant.fleet is blue
        with pytest.raises(VariantNotFound):
            await router.invoke(EP, b"x", [], target_variant="Gone")

    run(body())


# --- replica choice


def test_least_outstanding_replica_is_chosen(log: EndpointLog) -> None:
    a = fleet(log, "A", count=3)
    r0, r1, r2 = a.replicas()
    r0.outstanding, r1.outstanding, r2.outstanding = 2, 0, 1
    router = routed(route(vroute(a)))

    async def body() -> None:
        await router.invoke(EP, b"first", [])
        assert a.invocations[-1] == ("A/1", b"first")
        r1.healthy = False  # not available: skipped although least busy
        await router.invoke(EP, b"second", [])
        assert a.invocations[-1] == ("A/2", b"second")
        assert (r0.outstanding, r1.outstanding, r2.outstanding) == (2, 0, 1)  # every request released

    run(body())


def test_concurrent_requests_spread_over_replicas(log: EndpointLog) -> None:
    a = fleet(log, "A", count=3)
    gate = asyncio.Event()

    async def slow(replica: FakeReplica, headers: object, body: bytes, timeout: float) -> ReplicaResponse:
        await gate.wait()
        return ReplicaResponse(200, {}, replica.name.encode())

    a.responder = slow
    router = routed(route(vroute(a)))

    async def body() -> None:
        tasks = [asyncio.create_task(router.invoke(EP, b"x", [])) for _ in range(3)]
        await fakes.eventually(lambda: len(a.invocations) == 3)
        assert sorted(name for name, _ in a.invocations) == ["A/0", "A/1", "A/2"]
        assert [r.outstanding for r in a.replicas()] == [1, 1, 1]
        gate.set()
        results = await asyncio.gather(*tasks)
        assert sorted(res.body for res in results) == [b"A/0", b"A/1", b"A/2"]
        assert [r.outstanding for r in a.replicas()] == [0, 0, 0]

    run(body())


def test_unreachable_replica_is_taken_out_and_the_request_retried(log: EndpointLog) -> None:
    a = fleet(log, "A", count=2)
    a.responder = raising(ReplicaUnreachable("connection refused"), only="A/0")
    router = routed(route(vroute(a)))

    async def body() -> None:
        result = await router.invoke(EP, b"x", [])
        assert result.body == b"x"
        assert [name for name, _ in a.invocations] == ["A/0", "A/1"]
        assert a.unreachable == ["A/0"]
        assert not a.replicas()[0].available
        assert a.stats.errors_5xx == 0 and a.stats.requests == 1
        assert [r.outstanding for r in a.replicas()] == [0, 0]

    run(body())


def test_every_replica_unreachable_is_no_capacity(log: EndpointLog) -> None:
    a = fleet(log, "A", count=2)
    a.responder = raising(ReplicaUnreachable("connection refused"))
    router = routed(route(vroute(a)))

    async def body() -> None:
        with pytest.raises(NoCapacity) as exc:
            await router.invoke(EP, b"x", [])
        assert (exc.value.endpoint, exc.value.variant) == (EP, "A")
        assert sorted(a.unreachable) == ["A/0", "A/1"]
        assert a.stats.errors_5xx == 1

    run(body())


def test_no_healthy_replica_waits_then_no_capacity(log: EndpointLog) -> None:
    a = fleet(log, "A", count=1)
    a.replicas()[0].healthy = False
    router = routed(route(vroute(a)), instance_wait=0.05)

    async def body() -> None:
        with pytest.raises(NoCapacity):
            await router.invoke(EP, b"x", [])
        assert a.invocations == []
        assert a.stats.errors_5xx == 1 and a.stats.requests == 1

    run(body())


def test_replica_that_comes_back_while_waiting_serves(log: EndpointLog) -> None:
    a = fleet(log, "A", count=1)
    replica = a.replicas()[0]
    replica.healthy = False
    router = routed(route(vroute(a)), instance_wait=2.0)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, setattr, replica, "healthy", True)
        result = await router.invoke(EP, b"late", [])
        assert result.body == b"late"

    run(body())


def test_timeout_recycles_the_replica(log: EndpointLog) -> None:
    a = fleet(log, "A", count=2)
    a.responder = raising(ReplicaTimeout("no answer"))
    router = routed(route(vroute(a, timeout=3.0)))

    async def body() -> None:
        with pytest.raises(ModelTimedOut) as exc:
            await router.invoke(EP, b"x", [])
        assert isinstance(exc.value, ModelFailed)
        assert exc.value.variant == "A" and exc.value.status == 0 and exc.value.timeout == 3.0
        assert exc.value.log_stream_arn == ARN
        assert a.recycled == ["A/0"]
        assert len(a.invocations) == 1  # not retried: the model may have run it
        assert a.stats.errors_5xx == 1
        assert [r.outstanding for r in a.replicas()] == [0, 0]

    run(body())


def test_lost_replica_is_a_model_error_not_retried(log: EndpointLog) -> None:
    a = fleet(log, "A", count=2)
    a.responder = raising(ReplicaLost("connection reset mid-response"))
    router = routed(route(vroute(a)))

    async def body() -> None:
        with pytest.raises(ModelLost) as exc:
            await router.invoke(EP, b"x", [])
        assert "connection reset" in exc.value.message
        assert len(a.invocations) == 1 and a.recycled == [] and a.unreachable == []
        assert a.stats.errors_5xx == 1

    run(body())


@pytest.mark.parametrize(("code", "counter"), [(400, "errors_4xx"), (422, "errors_4xx"), (500, "errors_5xx")])
def test_model_error_status_is_counted_by_class(log: EndpointLog, code: int, counter: str) -> None:
    a = fleet(log, "A")
    a.responder = status(code, b"bad input")
    router = routed(route(vroute(a)))

    async def body() -> None:
        with pytest.raises(ModelFailed) as exc:
            await router.invoke(EP, b"x", [])
        assert exc.value.status == code and exc.value.message == "bad input" and exc.value.variant == "A"
        assert getattr(a.stats, counter) == 1
        other = "errors_5xx" if counter == "errors_4xx" else "errors_4xx"
        assert getattr(a.stats, other) == 0
        assert a.stats.requests == 1

    run(body())


# --- shadow variants


def with_shadow(log: EndpointLog, share: float) -> tuple[Router, FakeFleet, FakeFleet]:
    prod, shadow = fleet(log, "Prod"), fleet(log, "Shadow")
    r = route(vroute(prod))
    r.shadow, r.shadow_share = vroute(shadow), share
    return routed(r), prod, shadow


def test_shadow_gets_a_copy_after_the_live_response(log: EndpointLog) -> None:
    router, prod, shadow = with_shadow(log, 1.0)

    async def body() -> None:
        result = await router.invoke(EP, b"payload", [])
        assert result.variant.name == "Prod" and result.body == b"payload"
        assert prod.invocations == [("Prod/0", b"payload")]
        await fakes.eventually(lambda: shadow.invocations == [("Shadow/0", b"payload")])
        await fakes.eventually(lambda: router.shadow_in_flight == 0)
        assert shadow.stats.requests == 1

    run(body())


def test_shadow_failure_never_reaches_the_caller(log: EndpointLog) -> None:
    router, prod, shadow = with_shadow(log, 1.0)
    shadow.responder = status(500, b"shadow broke")

    async def body() -> None:
        result = await router.invoke(EP, b"x", [])
        assert result.body == b"x"
        await fakes.eventually(lambda: router.shadow_in_flight == 0 and len(shadow.invocations) == 1)
        assert shadow.stats.errors_5xx == 1 and prod.stats.errors_5xx == 0

    run(body())
    assert "shadow request failed" in log.path.read_text()


def test_shadow_share_samples_requests(log: EndpointLog) -> None:
    router, prod, shadow = with_shadow(log, 0.2)

    async def body() -> None:
        random.seed(21)
        for _ in range(500):
            await router.invoke(EP, b"x", [])
            await asyncio.sleep(0)  # let the copy run (a real replica's I/O would yield)
        await fakes.eventually(lambda: router.shadow_in_flight == 0)
        assert router.shadow_dropped == 0
        assert len(prod.invocations) == 500
        assert len(shadow.invocations) / 500 == pytest.approx(0.2, abs=0.05)

    run(body())


def test_shadow_copies_beyond_the_in_flight_limit_are_dropped(log: EndpointLog) -> None:
    router, prod, shadow = with_shadow(log, 1.0)
    router.shadow_in_flight = router_module.SHADOW_MAX_IN_FLIGHT

    async def body() -> None:
        await router.invoke(EP, b"x", [])
        await asyncio.sleep(0.01)
        assert shadow.invocations == []
        assert router.shadow_dropped == 1
        assert len(prod.invocations) == 1

    run(body())
