"""The endpoint's typed records (resources/endpoint.py): statuses, snapshots, deployments and
their one (de)serialisation, also through the real endpoints table (store/endpoints.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from modelhost.resources.endpoint import (
    Deployment,
    EndpointRecord,
    EndpointStatus,
    Snapshot,
    VariantState,
)
from modelhost.store import endpoints as rows
from tests.unit import fakes

S = EndpointStatus


# --- statuses


def test_status_values_are_the_wire_strings() -> None:
    assert [s.value for s in S] == [
        "Creating",
        "Updating",
        "SystemUpdating",
        "RollingBack",
        "InService",
        "OutOfService",
        "Deleting",
        "Failed",
    ]
    assert S("InService") is S.IN_SERVICE
    assert S.IN_SERVICE == "InService" and f"{S.FAILED}" == "Failed"
    with pytest.raises(ValueError):
        S("inservice")


@pytest.mark.parametrize(
    ("status", "in_progress", "restorable"),
    [
        (S.CREATING, True, False),
        (S.UPDATING, True, True),
        (S.SYSTEM_UPDATING, True, False),
        (S.ROLLING_BACK, True, True),
        (S.IN_SERVICE, False, True),
        (S.OUT_OF_SERVICE, False, False),
        (S.DELETING, False, False),
        (S.FAILED, False, False),
    ],
)
def test_status_properties(status: EndpointStatus, in_progress: bool, restorable: bool) -> None:
    assert status.in_progress is in_progress
    assert status.restorable is restorable


# --- variant state and snapshots


def test_variant_state_initial() -> None:
    assert VariantState.initial({"VariantName": "v"}) == VariantState(1.0, 1)
    assert VariantState.initial({"InitialInstanceCount": 3, "InitialVariantWeight": 0.5}) == VariantState(0.5, 3)
    serverless = {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}, "InitialInstanceCount": 4}
    assert VariantState.initial(serverless) == VariantState(1.0, 1)
    assert isinstance(VariantState.initial({"InitialVariantWeight": 2}).weight, float)


def config() -> dict[str, Any]:
    return {
        "ProductionVariants": [
            fakes.variant("A", "m1", count=2, weight=3),
            fakes.variant("B", "m2", count=1, weight=1),
        ],
        "ShadowProductionVariants": [fakes.variant("Shadow", "m1", count=1, weight=0.5)],
        "DataCaptureConfig": {"EnableCapture": True, "InitialSamplingPercentage": 10},
    }


def models() -> dict[str, dict[str, Any]]:
    return {"m1": fakes.model_spec("m1", env={"K": "V"}), "m2": fakes.model_spec("m2")}


def test_snapshot_freeze_copies_and_reads_initial_states() -> None:
    cfg, mods = config(), models()
    snap = Snapshot.freeze("cfg", cfg, mods, 123.5)
    cfg["ProductionVariants"][0]["InitialInstanceCount"] = 99
    mods["m1"]["PrimaryContainer"]["Environment"]["K"] = "changed"
    # A later change to the config or model (or their deletion) does not reach the snapshot.
    assert snap.config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert snap.models["m1"]["PrimaryContainer"]["Environment"] == {"K": "V"}
    assert snap.variants == {"A": VariantState(3.0, 2), "B": VariantState(1.0, 1), "Shadow": VariantState(0.5, 1)}
    assert [v["VariantName"] for v in snap.production_variants] == ["A", "B"]
    assert [v["VariantName"] for v in snap.shadow_variants] == ["Shadow"]
    assert [v["VariantName"] for v in snap.all_variants] == ["A", "B", "Shadow"]
    assert snap.time == 123.5


def test_snapshot_desired_and_with_variant() -> None:
    snap = Snapshot.freeze("cfg", config(), models(), 1.0)
    changed = snap.with_variant("A", VariantState(0.0, 5))
    assert changed.desired(changed.production_variants[0]) == VariantState(0.0, 5)
    assert snap.desired(snap.production_variants[0]) == VariantState(3.0, 2)  # the original is unchanged
    assert changed.variants["B"] == snap.variants["B"]
    # A variant without a recorded state (an old row) falls back to the config's initial values.
    bare = dataclasses.replace(snap, variants={})
    assert bare.desired(bare.production_variants[1]) == VariantState(1.0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.config_name = "other"  # type: ignore[misc]


def test_config_without_shadows() -> None:
    snap = Snapshot.freeze("c", {"ProductionVariants": [fakes.variant("A", "m1")]}, models(), 0.0)
    assert snap.shadow_variants == []
    assert [v["VariantName"] for v in snap.all_variants] == ["A"]


def test_snapshot_json_round_trip_through_json_text() -> None:
    snap = Snapshot.freeze("cfg", config(), models(), 17.25).with_variant("B", VariantState(2.0, 4))
    data = json.loads(json.dumps(snap.to_json()))
    assert set(data) == {"config_name", "config", "models", "variants", "time"}
    assert data["variants"]["B"] == {"weight": 2.0, "count": 4}
    assert Snapshot.from_json(data) == snap


def test_snapshot_from_json_tolerates_missing_variants_and_int_weights() -> None:
    data = {"config_name": "c", "config": config(), "models": models(), "time": 5}
    snap = Snapshot.from_json(data)
    assert snap.variants == {}
    assert snap.time == 5.0
    with_ints = Snapshot.from_json({**data, "variants": {"A": {"weight": 2, "count": "3"}}})
    assert with_ints.variants["A"] == VariantState(2.0, 3)
    assert isinstance(with_ints.variants["A"].weight, float)


# --- deployments


def test_minimal_deployment_json_leaves_defaults_out() -> None:
    snap = Snapshot.freeze("cfg", config(), models(), 1.0)
    data = Deployment(snap).to_json()
    assert set(data) == {"current", "pending"}
    assert data["pending"] is None
    assert Deployment.from_json(json.loads(json.dumps(data))) == Deployment(snap)


def test_full_deployment_json_round_trip() -> None:
    current = Snapshot.freeze("blue", config(), models(), 1.0)
    pending = Snapshot.freeze("green", {"ProductionVariants": [fakes.variant("A", "m2", count=4)]}, models(), 2.0)
    policy = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE"}}}
    full = Deployment(current, pending, policy, capacity_change=True, last_deployment_config=policy)
    data = json.loads(json.dumps(full.to_json()))
    assert data["capacity_change"] is True
    assert data["pending_policy"] == policy and data["last_deployment_config"] == policy
    back = Deployment.from_json(data)
    assert back == full
    assert back.pending is not None and back.pending.variants["A"] == VariantState(1.0, 4)


# --- endpoint records


def make_record(**changes: Any) -> EndpointRecord:
    rec = fakes.record("My-Endpoint", Snapshot.freeze("cfg", config(), models(), 1.0), status=S.IN_SERVICE)
    return dataclasses.replace(rec, **changes)


def test_record_row_round_trip() -> None:
    rec = make_record(failure_reason="scaled badly", spec={"DeploymentConfig": {"x": 1}})
    row = rec.to_row()
    assert row["name_key"] == "my-endpoint" and rec.key == "my-endpoint"
    assert row["status"] == "InService" and isinstance(row["status"], str)
    assert row["deployment"] == rec.deployment.to_json()
    decoded = json.loads(json.dumps(row))  # as the JSON columns store it
    assert EndpointRecord.from_row(decoded) == rec


def test_record_from_row_defaults() -> None:
    row = make_record().to_row()
    row["spec"] = None
    del row["failure_reason"]
    rec = EndpointRecord.from_row(row)
    assert rec.spec == {} and rec.failure_reason is None
    assert rec.status is S.IN_SERVICE


def test_records_through_the_endpoints_table(tmp_path: Path) -> None:
    store = fakes.make_store(tmp_path)
    try:
        rec = make_record()
        fakes.insert(store, rec)
        assert fakes.load(store, "MY-ENDPOINT") == rec  # names are case-insensitive
        pending = Snapshot.freeze("next", config(), models(), 9.0)
        saved = fakes.save(
            store,
            rec,
            status=S.UPDATING,
            deployment=dataclasses.replace(rec.deployment, pending=pending, pending_policy={"p": 1}),
        )
        loaded = fakes.load(store, "my-endpoint")
        assert loaded == saved
        assert loaded is not None and loaded.status is S.UPDATING and loaded.deployment.pending == pending
        with store.begin() as conn:
            assert [r.name for r in rows.load_all(store, conn)] == ["My-Endpoint"]
            rows.delete(store, conn, "my-ENDPOINT")
        assert fakes.load(store, "My-Endpoint") is None
    finally:
        store.engine.dispose()
