"""The endpoint reconciler (controllers/reconciler.py) over a real metadata store, a real router
and a fake backend: create, restore after a restart, capacity changes, delete, failure paths."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from modelhost.resources.endpoint import EndpointRecord, EndpointStatus, Snapshot, VariantState
from modelhost.store import tables
from tests.unit import fakes
from tests.unit.fakes import Env

S = EndpointStatus


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from fakes.env_fixture(tmp_path, stop_grace=12.5)


def two_variants(config: str = "cfg-a") -> Snapshot:
    return fakes.snapshot(
        config,
        [
            fakes.variant(
                "A",
                "model-a",
                count=2,
                weight=3.0,
                ContainerStartupHealthCheckTimeoutInSeconds=120,
                ModelDataDownloadTimeoutInSeconds=900,
            ),
            fakes.variant("B", "model-b", count=1, weight=1.0),
        ],
        models={"model-a": fakes.model_spec("model-a", env={"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "7"})},
    )


async def deployed(env: Env, name: str = "ep", snap: Snapshot | None = None) -> EndpointRecord:
    env.insert(fakes.record(name, snap or two_variants()))
    await env.pass_once()
    rec = env.load(name)
    assert rec is not None and rec.status is S.IN_SERVICE
    return rec


def tag_rows(env: Env, arn: str) -> list[tuple[str, str]]:
    with env.store.begin() as conn:
        t = tables.tags
        return [(r.key, r.value) for r in conn.execute(select(t).where(t.c.resource_arn == arn))]


# --- create


def test_create_goes_in_service_with_routes_and_fleet_requests(env: Env) -> None:
    async def body() -> None:
        env.insert(fakes.record("ep", two_variants()))
        await env.pass_once()

        rec = env.load("ep")
        assert rec is not None
        assert rec.status is S.IN_SERVICE
        assert rec.failure_reason is None

        reqs = {r.variant: r for r in env.backend.requests}
        assert set(reqs) == {"A", "B"}
        a, b = reqs["A"], reqs["B"]
        assert (a.count, b.count) == (2, 1)
        assert a.owner == "ep" and a.label == "Variant A"
        assert a.extra_env == {"SAGEMAKER_ENDPOINT_NAME": "ep", "SAGEMAKER_VARIANT_NAME": "A"}
        assert b.extra_env["SAGEMAKER_VARIANT_NAME"] == "B"
        assert a.startup_timeout == 120.0 and b.startup_timeout is None
        assert a.download_timeout == 900.0 and b.download_timeout == 3600.0
        assert fakes.model_name_of(a.model) == "model-a"

        assert all(f.started and f.healthy_count == f.size for f in env.backend.fleets)
        route = env.router.routes["ep"]
        assert [(v.name, v.weight) for v in route.variants] == [("A", 3.0), ("B", 1.0)]
        assert route.by_name["A"].timeout == 7.0
        assert route.by_name["B"].timeout == 60.0  # the default when the model sets none
        assert route.by_name["A"].fleet is env.backend.fleet("model-a", "A")
        assert route.shadow is None
        assert "/aws/sagemaker/Endpoints/ep" in route.by_name["A"].log_stream_arn

        running = env.reconciler.running.get("EP")  # keys are case-insensitive
        assert running is not None and running.route is route
        assert set(running.fleets) == {"A", "B"}
        view = env.reconciler.running.variant_view("ep")
        assert (view["A"].current_weight, view["A"].current_count) == (3.0, 2)

    asyncio.run(body())


def test_create_with_shadow_variant_routes_a_sampled_copy(env: Env) -> None:
    async def body() -> None:
        snap = fakes.snapshot(
            "cfg-s",
            [fakes.variant("Prod", "model-a", weight=1.0)],
            shadows=[fakes.variant("Shadow", "model-b", weight=0.25)],
        )
        env.insert(fakes.record("ep", snap))
        await env.pass_once()
        route = env.router.routes["ep"]
        assert [v.name for v in route.variants] == ["Prod"]
        assert route.shadow is not None and route.shadow.name == "Shadow"
        assert route.shadow_share == pytest.approx(0.25)
        assert {r.variant for r in env.backend.requests} == {"Prod", "Shadow"}

    asyncio.run(body())


def test_creating_endpoint_is_not_routed_until_its_fleets_are_healthy(env: Env) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        env.backend.start_gate = gate
        env.insert(fakes.record("ep", two_variants()))
        env.sync()
        await fakes.eventually(lambda: all(f.start_calls for f in env.backend.fleets) and len(env.backend.fleets) == 2)
        assert "ep" not in env.router.routes
        rec = env.load("ep")
        assert rec is not None and rec.status is S.CREATING
        gate.set()
        await env.reconciler.wait_idle()
        assert "ep" in env.router.routes
        rec = env.load("ep")
        assert rec is not None and rec.status is S.IN_SERVICE

    asyncio.run(body())


@pytest.mark.parametrize("failure", ["deploy", "start"])
def test_create_failure_marks_failed_and_leaves_nothing(env: Env, failure: str) -> None:
    async def body() -> None:
        if failure == "deploy":
            env.backend.deploy_failures["model-b"] = "Unsupported image fake.example/model-b:1"
        else:
            env.backend.start_failures["model-b"] = "Variant B: instance B/0 failed its health check"
        env.insert(fakes.record("ep", two_variants()))
        await env.pass_once()

        rec = env.load("ep")
        assert rec is not None
        assert rec.status is S.FAILED
        expected = "Unsupported image" if failure == "deploy" else "failed its health check"
        assert rec.failure_reason is not None and expected in rec.failure_reason
        assert env.reconciler.running.get("ep") is None
        assert "ep" not in env.router.routes
        # Every fleet that was made is stopped (all or nothing).
        assert env.backend.fleets, "variant A's fleet was created before B failed"
        assert all(f.stopped for f in env.backend.fleets)

        # A Failed endpoint with nothing running is left alone by later passes.
        made = len(env.backend.requests)
        await env.pass_once()
        assert len(env.backend.requests) == made
        assert not env.reconciler.busy
        again = env.load("ep")
        assert again is not None and again.status is S.FAILED

    asyncio.run(body())


def test_failure_reason_is_truncated_to_1024_characters(env: Env) -> None:
    async def body() -> None:
        env.backend.deploy_failures["model-a"] = "x" * 5000
        env.insert(fakes.record("ep", fakes.snapshot("c", [fakes.variant("A", "model-a")])))
        await env.pass_once()
        rec = env.load("ep")
        assert rec is not None and rec.status is S.FAILED
        assert rec.failure_reason == "x" * 1024

    asyncio.run(body())


# --- restore


def test_restore_after_restart_starts_fleets_and_routes_early(env: Env) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        env.backend.start_gate = gate
        rec = env.insert(fakes.record("ep", two_variants(), status=S.IN_SERVICE))
        env.reconciler.sync([rec])
        await fakes.eventually(lambda: len(env.backend.fleets) == 2 and all(f.start_calls for f in env.backend.fleets))
        # Routed while the instances start (requests wait for capacity instead of "not found").
        route = env.router.routes["ep"]
        assert {v.name for v in route.variants} == {"A", "B"}
        assert not any(f.started for f in env.backend.fleets)
        gate.set()
        await env.reconciler.wait_idle()

        assert all(f.started for f in env.backend.fleets)
        assert env.router.routes["ep"].by_name["A"].fleet is env.backend.fleet("model-a", "A")
        after = env.load("ep")
        assert after is not None
        assert after.status is S.IN_SERVICE
        assert after.last_modified_time == rec.last_modified_time  # the row was not rewritten
        assert [r.count for r in env.backend.requests] == [2, 1]

    asyncio.run(body())


def test_restore_failure_withdraws_the_early_route(env: Env) -> None:
    async def body() -> None:
        env.backend.start_failures["model-a"] = "the model no longer loads"
        rec = env.insert(fakes.record("ep", two_variants(), status=S.IN_SERVICE))
        env.reconciler.sync([rec])
        await env.reconciler.wait_idle()
        assert "ep" not in env.router.routes
        assert env.reconciler.running.get("ep") is None
        after = env.load("ep")
        assert after is not None and after.status is S.FAILED
        assert after.failure_reason is not None and "no longer loads" in after.failure_reason
        assert all(f.stopped for f in env.backend.fleets)

    asyncio.run(body())


def test_restore_mid_capacity_change_restores_then_applies(env: Env) -> None:
    async def body() -> None:
        snap = two_variants()
        snap = snap.with_variant("A", VariantState(3.0, 3))
        env.insert(fakes.record("ep", snap, status=S.UPDATING, capacity_change=True))
        await env.pass_once()  # restart: the current snapshot's fleets come back first
        rec = env.load("ep")
        assert rec is not None and rec.status is S.UPDATING
        assert env.backend.fleet("model-a", "A").size == 3
        await env.pass_once()  # then the capacity change completes (nothing left to scale)
        rec = env.load("ep")
        assert rec is not None and rec.status is S.IN_SERVICE and not rec.deployment.capacity_change
        assert env.backend.fleet("model-a", "A").scale_calls == []

    asyncio.run(body())


# --- capacity changes


@pytest.mark.parametrize(("new_count", "new_weight"), [(4, 5.0), (1, 0.5)])
def test_capacity_change_scales_in_place_and_republishes_weights(env: Env, new_count: int, new_weight: float) -> None:
    async def body() -> None:
        rec = await deployed(env)
        fleet_a, fleet_b = env.backend.fleet("model-a", "A"), env.backend.fleet("model-b", "B")
        current = rec.deployment.current.with_variant("A", VariantState(new_weight, new_count))
        env.save(rec, status=S.UPDATING, deployment=fakes.with_deployment(rec, current=current, capacity_change=True))
        await env.pass_once()

        assert fleet_a.scale_calls == [(new_count, 12.5)]  # drain timeout = settings.stop_grace
        assert fleet_a.size == new_count
        assert fleet_b.scale_calls == []  # unchanged variants are not touched
        assert len(env.backend.fleets) == 2  # in place: no new fleet
        route = env.router.routes["ep"]
        assert route.by_name["A"].weight == new_weight and route.by_name["B"].weight == 1.0
        assert route.by_name["A"].fleet is fleet_a
        after = env.load("ep")
        assert after is not None
        assert after.status is S.IN_SERVICE and after.failure_reason is None
        assert after.deployment.capacity_change is False
        assert after.deployment.current.variants["A"] == VariantState(new_weight, new_count)
        assert not env.reconciler.running.get("ep").statuses  # type: ignore[union-attr]

    asyncio.run(body())


def test_scale_in_keeps_in_flight_replicas_out_of_rotation(env: Env) -> None:
    async def body() -> None:
        rec = await deployed(env)
        fleet_a = env.backend.fleet("model-a", "A")
        leaving = fleet_a.replicas()[1]
        current = rec.deployment.current.with_variant("A", VariantState(3.0, 1))
        env.save(rec, status=S.UPDATING, deployment=fakes.with_deployment(rec, current=current, capacity_change=True))
        await env.pass_once()
        assert leaving.leaving and not leaving.available
        assert [r.name for r in fleet_a.replicas()] == ["A/0"]

    asyncio.run(body())


def test_scale_failure_keeps_serving_with_reason_and_true_count(env: Env) -> None:
    async def body() -> None:
        rec = await deployed(env)
        fleet_a = env.backend.fleet("model-a", "A")
        fleet_a.scale_error = "no memory for another instance"
        current = rec.deployment.current.with_variant("A", VariantState(2.0, 5))
        env.save(rec, status=S.UPDATING, deployment=fakes.with_deployment(rec, current=current, capacity_change=True))
        await env.pass_once()

        assert fleet_a.scale_calls == [(5, 12.5)]
        after = env.load("ep")
        assert after is not None
        assert after.status is S.IN_SERVICE
        assert after.failure_reason is not None
        assert "variant A" in after.failure_reason and "5" in after.failure_reason
        assert "no memory for another instance" in after.failure_reason
        # The stored count is what actually runs; the weight change still applies.
        assert after.deployment.current.variants["A"] == VariantState(2.0, fleet_a.size)
        assert fleet_a.size == 2
        assert env.router.routes["ep"].by_name["A"].weight == 2.0
        assert after.deployment.capacity_change is False

    asyncio.run(body())


# --- delete and teardown


def test_delete_stops_fleets_withdraws_route_and_forgets_row_and_tags(env: Env) -> None:
    async def body() -> None:
        env.insert(fakes.record("ep", two_variants()), tag_list=[{"Key": "team", "Value": "ml"}])
        other = env.insert(fakes.record("other", fakes.snapshot("c2", [fakes.variant("X", "model-x")])))
        await env.pass_once()
        rec = env.load("ep")
        assert rec is not None and rec.status is S.IN_SERVICE
        assert tag_rows(env, rec.arn) == [("team", "ml")]

        env.save(rec, status=S.DELETING)
        await env.pass_once()

        fleets = env.backend.fleets_of("model-a") + env.backend.fleets_of("model-b")
        assert fleets and all(f.stop_calls == [30.0] for f in fleets)
        assert "ep" not in env.router.routes
        assert env.reconciler.running.get("ep") is None
        assert env.load("ep") is None
        assert tag_rows(env, rec.arn) == []
        assert "ep" not in env.reconciler.logs
        # Other endpoints are untouched.
        assert "other" in env.router.routes
        assert not env.backend.fleet("model-x", "X").stopped
        assert env.load(other.name) is not None

    asyncio.run(body())


def test_delete_of_endpoint_not_running_just_forgets_it(env: Env) -> None:
    async def body() -> None:
        env.insert(fakes.record("ep", two_variants(), status=S.DELETING))
        await env.pass_once()
        assert env.load("ep") is None
        assert env.backend.requests == []

    asyncio.run(body())


def test_failed_endpoint_with_fleets_running_is_torn_down(env: Env) -> None:
    async def body() -> None:
        rec = await deployed(env)
        env.save(rec, status=S.FAILED, failure_reason="something broke")
        await env.pass_once()
        assert all(f.stopped for f in env.backend.fleets)
        assert "ep" not in env.router.routes
        assert env.reconciler.running.get("ep") is None
        after = env.load("ep")
        assert after is not None and after.status is S.FAILED and after.failure_reason == "something broke"
        await env.pass_once()  # nothing more to do
        assert all(len(f.stop_calls) == 1 for f in env.backend.fleets)

    asyncio.run(body())


# --- one step per endpoint


def test_one_step_per_endpoint_at_a_time(env: Env) -> None:
    async def body() -> None:
        gate = asyncio.Event()
        env.backend.start_gate = gate
        one = env.insert(fakes.record("one", fakes.snapshot("c1", [fakes.variant("A", "model-a")])))
        two = env.insert(fakes.record("two", fakes.snapshot("c2", [fakes.variant("A", "model-b")])))
        env.reconciler.sync([one])
        await fakes.eventually(lambda: len(env.backend.fleets) == 1)
        assert set(env.reconciler.busy) == {"one"}
        # More passes while the step runs do not start a second one for the same endpoint...
        for _ in range(3):
            env.reconciler.sync([one])
            await asyncio.sleep(0)
        assert len(env.backend.requests) == 1
        # ...but another endpoint gets its own step at the same time.
        env.reconciler.sync([one, two])
        await fakes.eventually(lambda: len(env.backend.fleets) == 2)
        assert set(env.reconciler.busy) == {"one", "two"}
        gate.set()
        await env.reconciler.wait_idle()
        assert not env.reconciler.busy
        assert [r.owner for r in env.backend.requests] == ["one", "two"]
        for name in ("one", "two"):
            rec = env.load(name)
            assert rec is not None and rec.status is S.IN_SERVICE
        # In service and running: a later pass has nothing to do.
        await env.pass_once()
        assert len(env.backend.requests) == 2

    asyncio.run(body())


def test_shutdown_mid_create_stops_the_starting_fleets(env: Env) -> None:
    async def body() -> None:
        env.backend.start_gate = asyncio.Event()  # never set: the instances never come up
        rec = env.insert(fakes.record("ep", two_variants()))
        env.reconciler.sync([rec])
        await fakes.eventually(lambda: len(env.backend.fleets) == 2 and all(f.start_calls for f in env.backend.fleets))
        await env.reconciler.shutdown()
        assert all(f.stopped for f in env.backend.fleets)
        assert env.reconciler.running.get("ep") is None
        assert "ep" not in env.router.routes
        after = env.load("ep")
        assert after is not None and after.status is S.CREATING  # it resumes on the next start

    asyncio.run(body())
