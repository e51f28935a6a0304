"""The SageMaker control plane through unmodified boto3 clients: shapes, listing, tags, errors
and deployment failures. One real server for the module; every test uses its own names."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, WaiterError

from tests.helpers import PYTHON_IMAGE, ROLE, SKLEARN_IMAGE, csv_row, diabetes, sklearn_model, tarball, wait_status

ACCOUNT = "123456789012"
ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
FAST = {"Delay": 1, "MaxAttempts": 60}

SLOW_CODE = """
import time

def model_fn(model_dir):
    time.sleep(5)
    return lambda data: [[float(sum(row))] for row in data]
"""

BOOM_CODE = """
def model_fn(model_dir):
    raise ValueError("boom")
"""


@pytest.fixture(scope="module")
def sk(server):  # type: ignore[no-untyped-def]
    """A fitted sklearn model in the bucket store at s3://models/cp/model.tar.gz."""
    data, model = sklearn_model()
    server.put_object("s3://models/cp/model.tar.gz", data)
    return model


def sk_container(**extra: object) -> dict:
    return {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/cp/model.tar.gz", **extra}


def variant(model: str, **extra: object) -> dict:
    return {
        "VariantName": "AllTraffic",
        "ModelName": model,
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large",
        **extra,
    }


def create_all(sm, name: str, container: dict) -> None:  # type: ignore[no-untyped-def]
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(name)])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def expect_error(fn, code: str, *fragments: str, status: int = 400, **kwargs: object) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        fn(**kwargs)
    resp = info.value.response
    assert resp["Error"]["Code"] == code, resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == status
    message = resp["Error"]["Message"]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def raw_post(url: str, target: str | None, body: bytes) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    req = urllib.request.Request(url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


# --- shapes -----------------------------------------------------------------------------------


def test_model_and_config_describe_shapes(sm, sk) -> None:  # type: ignore[no-untyped-def]
    before = datetime.now(UTC)
    container = sk_container(Environment={"A": "1"})
    out = sm.create_model(
        ModelName="Shape-Model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer=container,
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    assert out["ModelArn"] == f"{ARN}:model/shape-model"
    desc = sm.describe_model(ModelName="Shape-Model")
    assert desc["ModelName"] == "Shape-Model"
    assert desc["ModelArn"] == f"{ARN}:model/shape-model"
    assert desc["PrimaryContainer"] == container
    assert desc["ExecutionRoleArn"] == ROLE
    assert isinstance(desc["CreationTime"], datetime) and desc["CreationTime"].tzinfo is not None
    assert before.timestamp() - 1 <= desc["CreationTime"].timestamp() <= time.time() + 1
    # Lookup is case-insensitive, like the lower-cased ARN.
    assert sm.describe_model(ModelName="shape-model")["ModelName"] == "Shape-Model"

    out = sm.create_endpoint_config(
        EndpointConfigName="Shape-Config",
        ProductionVariants=[
            variant("Shape-Model"),
            {
                "VariantName": "Second",
                "ModelName": "Shape-Model",
                "InitialInstanceCount": 2,
                "InstanceType": "ml.c5.xlarge",
                "InitialVariantWeight": 3.0,
            },
        ],
    )
    assert out["EndpointConfigArn"] == f"{ARN}:endpoint-config/shape-config"
    desc = sm.describe_endpoint_config(EndpointConfigName="Shape-Config")
    assert desc["EndpointConfigName"] == "Shape-Config"
    assert desc["EndpointConfigArn"] == f"{ARN}:endpoint-config/shape-config"
    assert desc["CreationTime"].tzinfo is not None
    assert desc["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "Shape-Model",
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
            "InitialVariantWeight": 1.0,
        },
        {
            "VariantName": "Second",
            "ModelName": "Shape-Model",
            "InitialInstanceCount": 2,
            "InstanceType": "ml.c5.xlarge",
            "InitialVariantWeight": 3.0,
        },
    ]
    sm.delete_endpoint_config(EndpointConfigName="Shape-Config")
    sm.delete_model(ModelName="Shape-Model")
    expect_error(
        sm.describe_model,
        "ValidationException",
        f'Could not find model "{ARN}:model/shape-model".',
        ModelName="Shape-Model",
    )


def test_endpoint_lifecycle_shapes_and_in_progress_errors(server, sm) -> None:  # type: ignore[no-untyped-def]
    """A slow-loading model keeps the endpoint Creating: pending summary, in-progress errors, then InService."""
    server.put_object("s3://models/slow/model.tar.gz", tarball({"code/inference.py": SLOW_CODE}))
    name = "Slow-Ep"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/slow/model.tar.gz"},
    )
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(name)])
    out = sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=[{"Key": "k", "Value": "v"}])
    arn = f"{ARN}:endpoint/slow-ep"
    assert out["EndpointArn"] == arn

    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "Creating"
    assert desc["EndpointName"] == name and desc["EndpointArn"] == arn and desc["EndpointConfigName"] == name
    assert desc["CreationTime"].tzinfo is not None and desc["LastModifiedTime"].tzinfo is not None
    assert "ProductionVariants" not in desc
    pending = desc["PendingDeploymentSummary"]
    assert pending["EndpointConfigName"] == name
    assert pending["StartTime"].tzinfo is not None
    (pv,) = pending["ProductionVariants"]
    assert pv["VariantName"] == "AllTraffic"
    assert pv["InstanceType"] == "ml.m5.large"
    assert pv["DesiredInstanceCount"] == 1
    assert pv["DeployedImages"][0]["SpecifiedImage"] == PYTHON_IMAGE
    assert pv["VariantStatus"][0]["Status"] == "Creating"

    in_progress = f'Cannot update in-progress endpoint "{arn}".'
    expect_error(sm.delete_endpoint, "ValidationException", in_progress, EndpointName=name)
    expect_error(sm.update_endpoint, "ValidationException", in_progress, EndpointName=name, EndpointConfigName=name)
    expect_error(
        sm.create_endpoint,
        "ValidationException",
        f'Cannot create already existing endpoint "{arn}".',
        EndpointName=name,
        EndpointConfigName=name,
    )
    # Creating an endpoint counts as in progress for the waiter too: it keeps polling, then succeeds.
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)

    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert "PendingDeploymentSummary" not in desc and "FailureReason" not in desc
    (pv,) = desc["ProductionVariants"]
    assert pv["VariantName"] == "AllTraffic"
    assert pv["CurrentInstanceCount"] == 1
    assert pv["DesiredInstanceCount"] == 1
    assert pv["CurrentWeight"] == 1.0
    assert pv["DesiredWeight"] == 1.0
    assert pv["DeployedImages"][0]["SpecifiedImage"] == PYTHON_IMAGE
    assert "@sha256:" in pv["DeployedImages"][0]["ResolvedImage"]
    assert desc["LastModifiedTime"] >= desc["CreationTime"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]

    sm.delete_endpoint(EndpointName=name)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] in ("Deleting",)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST)
    expect_error(sm.describe_endpoint, "ValidationException", f'Could not find endpoint "{arn}".', EndpointName=name)
    # Tags go with the resource.
    expect_error(sm.list_tags, "ValidationException", arn, ResourceArn=arn)


# --- listing ----------------------------------------------------------------------------------


def _names(items: list[dict], key: str) -> list[str]:
    return [i[key] for i in items]


def test_list_models_filters_sort_and_pagination(sm, sk) -> None:  # type: ignore[no-untyped-def]
    names = ["lstm-c", "lstm-a", "lstm-e", "lstm-b", "lstm-d"]  # created in this order
    marks = []
    for n in names:
        sm.create_model(ModelName=n, ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())
        time.sleep(0.02)
        marks.append(datetime.now(UTC))
        time.sleep(0.02)
    sm.create_model(ModelName="other-model-x", ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())

    got = sm.list_models(NameContains="lstm", MaxResults=100)["Models"]
    # Default: CreationTime, Descending.
    assert _names(got, "ModelName") == list(reversed(names))
    assert got[0]["ModelArn"] == f"{ARN}:model/lstm-d" and got[0]["CreationTime"].tzinfo is not None
    assert set(got[0]) == {"ModelName", "ModelArn", "CreationTime"}
    assert _names(
        sm.list_models(NameContains="LSTM", SortBy="Name", SortOrder="Ascending")["Models"], "ModelName"
    ) == sorted(names)
    assert _names(
        sm.list_models(NameContains="lstm", SortBy="Name", SortOrder="Descending")["Models"], "ModelName"
    ) == sorted(names, reverse=True)
    assert (
        _names(sm.list_models(NameContains="lstm", SortBy="CreationTime", SortOrder="Ascending")["Models"], "ModelName")
        == names
    )
    # CreationTimeBefore is strict, CreationTimeAfter inclusive; marks[i] lies between model i and i+1.
    assert (
        _names(
            sm.list_models(NameContains="lstm", CreationTimeBefore=marks[1], SortOrder="Ascending")["Models"],
            "ModelName",
        )
        == names[:2]
    )
    assert (
        _names(
            sm.list_models(NameContains="lstm", CreationTimeAfter=marks[2], SortOrder="Ascending")["Models"],
            "ModelName",
        )
        == names[3:]
    )
    assert (
        _names(
            sm.list_models(
                NameContains="lstm", CreationTimeAfter=marks[0], CreationTimeBefore=marks[2], SortOrder="Ascending"
            )["Models"],
            "ModelName",
        )
        == names[1:3]
    )
    assert sm.list_models(NameContains="no-such-thing")["Models"] == []

    # MaxResults + NextToken by hand.
    page1 = sm.list_models(NameContains="lstm", SortBy="Name", SortOrder="Ascending", MaxResults=2)
    assert _names(page1["Models"], "ModelName") == ["lstm-a", "lstm-b"]
    page2 = sm.list_models(
        NameContains="lstm", SortBy="Name", SortOrder="Ascending", MaxResults=2, NextToken=page1["NextToken"]
    )
    assert _names(page2["Models"], "ModelName") == ["lstm-c", "lstm-d"]
    page3 = sm.list_models(
        NameContains="lstm", SortBy="Name", SortOrder="Ascending", MaxResults=2, NextToken=page2["NextToken"]
    )
    assert _names(page3["Models"], "ModelName") == ["lstm-e"]
    assert "NextToken" not in page3

    # The boto3 paginator sees every model exactly once.
    pages = list(sm.get_paginator("list_models").paginate(NameContains="lstm", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    seen = [m["ModelName"] for p in pages for m in p["Models"]]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
    everything = [
        m["ModelName"]
        for p in sm.get_paginator("list_models").paginate(PaginationConfig={"PageSize": 2})
        for m in p["Models"]
    ]
    assert len(everything) == len(set(everything))
    assert set(names) | {"other-model-x"} <= set(everything)

    expect_error(sm.list_models, "ValidationException", "Invalid pagination token", NextToken="garbage!!token")
    negative = base64.urlsafe_b64encode(b'{"offset": -2}').decode()
    expect_error(sm.list_models, "ValidationException", "Invalid pagination token", NextToken=negative)
    expect_error(
        sm.list_models,
        "ValidationException",
        "1 validation error detected",
        "failed to satisfy constraint",
        "Member must satisfy enum value set",
        SortBy="Status",
    )
    expect_error(sm.list_models, "ValidationException", "failed to satisfy constraint", MaxResults=1000)


def test_list_endpoint_configs(sm, sk) -> None:  # type: ignore[no-untyped-def]
    sm.create_model(ModelName="lstc-model", ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())
    names = ["lstc-b", "lstc-c", "lstc-a"]
    marks = []
    for n in names:
        sm.create_endpoint_config(EndpointConfigName=n, ProductionVariants=[variant("lstc-model")])
        time.sleep(0.02)
        marks.append(datetime.now(UTC))
        time.sleep(0.02)
    got = sm.list_endpoint_configs(NameContains="lstc")["EndpointConfigs"]
    assert _names(got, "EndpointConfigName") == list(reversed(names))
    assert set(got[0]) == {"EndpointConfigName", "EndpointConfigArn", "CreationTime"}
    assert got[0]["EndpointConfigArn"] == f"{ARN}:endpoint-config/lstc-a"
    assert _names(
        sm.list_endpoint_configs(NameContains="lstc", SortBy="Name", SortOrder="Ascending")["EndpointConfigs"],
        "EndpointConfigName",
    ) == sorted(names)
    assert _names(
        sm.list_endpoint_configs(NameContains="lstc", CreationTimeBefore=marks[0])["EndpointConfigs"],
        "EndpointConfigName",
    ) == ["lstc-b"]
    assert _names(
        sm.list_endpoint_configs(NameContains="lstc", CreationTimeAfter=marks[0], SortOrder="Ascending")[
            "EndpointConfigs"
        ],
        "EndpointConfigName",
    ) == ["lstc-c", "lstc-a"]
    pages = list(
        sm.get_paginator("list_endpoint_configs").paginate(
            NameContains="lstc", SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 2}
        )
    )
    assert [[c["EndpointConfigName"] for c in p["EndpointConfigs"]] for p in pages] == [
        ["lstc-a", "lstc-b"],
        ["lstc-c"],
    ]
    expect_error(sm.list_endpoint_configs, "ValidationException", "Invalid pagination token", NextToken="xyz")


def test_list_endpoints_status_sort_and_pagination(server, sm, sk) -> None:  # type: ignore[no-untyped-def]
    create_all(sm, "lste-ok", sk_container())
    for n in ("lste-bad1", "lste-bad2"):
        create_all(sm, n, {"Image": SKLEARN_IMAGE, "ModelDataUrl": f"s3://models/missing/{n}.tar.gz"})
    for n in ("lste-bad1", "lste-bad2"):
        assert wait_status(sm, n, ("InService", "Failed"))["EndpointStatus"] == "Failed"
    assert wait_status(sm, "lste-ok", ("InService", "Failed"))["EndpointStatus"] == "InService"

    got = sm.list_endpoints(NameContains="lste")["Endpoints"]
    assert _names(got, "EndpointName") == ["lste-bad2", "lste-bad1", "lste-ok"]
    assert set(got[0]) == {"EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus"}
    assert got[2]["EndpointArn"] == f"{ARN}:endpoint/lste-ok" and got[2]["EndpointStatus"] == "InService"
    assert _names(
        sm.list_endpoints(NameContains="lste", StatusEquals="Failed", SortBy="Name", SortOrder="Ascending")[
            "Endpoints"
        ],
        "EndpointName",
    ) == ["lste-bad1", "lste-bad2"]
    assert _names(sm.list_endpoints(NameContains="lste", StatusEquals="InService")["Endpoints"], "EndpointName") == [
        "lste-ok"
    ]
    assert sm.list_endpoints(NameContains="lste", StatusEquals="Updating")["Endpoints"] == []
    by_status = sm.list_endpoints(NameContains="lste", SortBy="Status", SortOrder="Ascending")["Endpoints"]
    assert [e["EndpointStatus"] for e in by_status] == ["Failed", "Failed", "InService"]
    by_status = sm.list_endpoints(NameContains="lste", SortBy="Status", SortOrder="Descending")["Endpoints"]
    assert [e["EndpointStatus"] for e in by_status] == ["InService", "Failed", "Failed"]
    created = {e["EndpointName"]: e["CreationTime"] for e in got}
    assert _names(
        sm.list_endpoints(NameContains="lste", CreationTimeBefore=created["lste-bad1"])["Endpoints"], "EndpointName"
    ) == ["lste-ok"]
    assert _names(
        sm.list_endpoints(NameContains="lste", CreationTimeAfter=created["lste-bad1"], SortOrder="Ascending")[
            "Endpoints"
        ],
        "EndpointName",
    ) == ["lste-bad1", "lste-bad2"]
    pages = list(sm.get_paginator("list_endpoints").paginate(NameContains="lste", PaginationConfig={"PageSize": 2}))
    assert [len(p["Endpoints"]) for p in pages] == [2, 1]
    assert sorted(e["EndpointName"] for p in pages for e in p["Endpoints"]) == ["lste-bad1", "lste-bad2", "lste-ok"]
    expect_error(sm.list_endpoints, "ValidationException", "Invalid pagination token", NextToken="AAAA")
    expect_error(
        sm.list_endpoints, "ValidationException", "Member must satisfy enum value set", StatusEquals="Sleeping"
    )

    for n in ("lste-ok", "lste-bad1", "lste-bad2"):
        sm.delete_endpoint(EndpointName=n)
    for n in ("lste-ok", "lste-bad1", "lste-bad2"):
        sm.get_waiter("endpoint_deleted").wait(EndpointName=n, WaiterConfig=FAST)


# --- tags -------------------------------------------------------------------------------------


def test_tags(sm, sk) -> None:  # type: ignore[no-untyped-def]
    arn = sm.create_model(
        ModelName="tag-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer=sk_container(),
        Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}],
    )["ModelArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    out = sm.add_tags(ResourceArn=arn, Tags=[{"Key": "c", "Value": "3"}, {"Key": "a", "Value": "one"}])
    assert out["Tags"] == [{"Key": "c", "Value": "3"}, {"Key": "a", "Value": "one"}]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "a", "Value": "one"},
        {"Key": "b", "Value": "2"},
        {"Key": "c", "Value": "3"},
    ]
    sm.delete_tags(ResourceArn=arn, TagKeys=["b", "not-there"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "one"}, {"Key": "c", "Value": "3"}]

    cfg_arn = sm.create_endpoint_config(
        EndpointConfigName="tag-config",
        ProductionVariants=[variant("tag-model")],
        Tags=[{"Key": "env", "Value": "test"}],
    )["EndpointConfigArn"]
    assert sm.list_tags(ResourceArn=cfg_arn)["Tags"] == [{"Key": "env", "Value": "test"}]

    missing = f"{ARN}:model/no-such-model"
    expect_error(sm.list_tags, "ValidationException", missing, ResourceArn=missing)
    expect_error(sm.add_tags, "ValidationException", missing, ResourceArn=missing, Tags=[{"Key": "a", "Value": "b"}])
    expect_error(sm.delete_tags, "ValidationException", missing, ResourceArn=missing, TagKeys=["a"])
    expect_error(
        sm.add_tags,
        "ValidationException",
        "1 validation error detected",
        "failed to satisfy constraint",
        ResourceArn=arn,
        Tags=[{"Key": "k" * 129, "Value": "v"}],
    )

    # Deleting the resource drops its tags: a new model of the same name starts clean.
    sm.delete_model(ModelName="tag-model")
    sm.create_model(ModelName="tag-model", ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []


# --- bad inputs -------------------------------------------------------------------------------


def test_unknown_resources(sm) -> None:  # type: ignore[no-untyped-def]
    model = f'Could not find model "{ARN}:model/ghost".'
    config = f'Could not find endpoint configuration "{ARN}:endpoint-config/ghost".'
    endpoint = f'Could not find endpoint "{ARN}:endpoint/ghost".'
    assert expect_error(sm.describe_model, "ValidationException", ModelName="Ghost") == model
    assert expect_error(sm.delete_model, "ValidationException", ModelName="ghost") == model
    assert expect_error(sm.describe_endpoint_config, "ValidationException", EndpointConfigName="ghost") == config
    assert expect_error(sm.delete_endpoint_config, "ValidationException", EndpointConfigName="ghost") == config
    assert expect_error(sm.describe_endpoint, "ValidationException", EndpointName="ghost") == endpoint
    assert expect_error(sm.delete_endpoint, "ValidationException", EndpointName="ghost") == endpoint
    assert (
        expect_error(sm.update_endpoint, "ValidationException", EndpointName="ghost", EndpointConfigName="ghost")
        == endpoint
    )
    # An endpoint config naming a missing model; an endpoint naming a missing config.
    assert (
        expect_error(
            sm.create_endpoint_config,
            "ValidationException",
            EndpointConfigName="ghost-cfg",
            ProductionVariants=[variant("ghost")],
        )
        == model
    )
    assert (
        expect_error(sm.create_endpoint, "ValidationException", EndpointName="ghost-ep", EndpointConfigName="ghost")
        == config
    )
    expect_error(sm.describe_endpoint, "ValidationException", "Could not find endpoint", EndpointName="ghost-ep")
    # endpoint_deleted succeeds at once on ValidationException; endpoint_in_service fails fast on it.
    sm.get_waiter("endpoint_deleted").wait(EndpointName="ghost", WaiterConfig=FAST)
    started = time.monotonic()
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ghost", WaiterConfig=FAST)
    assert time.monotonic() - started < 5


def test_duplicate_names(sm, sk) -> None:  # type: ignore[no-untyped-def]
    sm.create_model(ModelName="Dup-Model", ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())
    for name in ("Dup-Model", "dup-model", "DUP-MODEL"):
        assert (
            expect_error(
                sm.create_model,
                "ValidationException",
                ModelName=name,
                ExecutionRoleArn=ROLE,
                PrimaryContainer=sk_container(),
            )
            == f'Cannot create already existing model "{ARN}:model/dup-model".'
        )
    sm.create_endpoint_config(EndpointConfigName="dup-config", ProductionVariants=[variant("Dup-Model")])
    assert (
        expect_error(
            sm.create_endpoint_config,
            "ValidationException",
            EndpointConfigName="Dup-Config",
            ProductionVariants=[variant("dup-model")],
        )
        == f'Cannot create already existing endpoint configuration "{ARN}:endpoint-config/dup-config".'
    )
    # The endpoint: a missing artifact makes it fail fast; a Failed endpoint still holds its name.
    sm.create_model(
        ModelName="dup-broken",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/missing/dup.tar.gz"},
    )
    sm.create_endpoint_config(EndpointConfigName="dup-broken", ProductionVariants=[variant("dup-broken")])
    sm.create_endpoint(EndpointName="dup-ep", EndpointConfigName="dup-broken")
    assert (
        expect_error(sm.create_endpoint, "ValidationException", EndpointName="dup-ep", EndpointConfigName="dup-broken")
        == f'Cannot create already existing endpoint "{ARN}:endpoint/dup-ep".'
    )
    assert wait_status(sm, "dup-ep", ("Failed", "InService"))["EndpointStatus"] == "Failed"
    expect_error(
        sm.create_endpoint,
        "ValidationException",
        "Cannot create already existing endpoint",
        EndpointName="dup-ep",
        EndpointConfigName="dup-broken",
    )
    sm.delete_endpoint(EndpointName="dup-ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="dup-ep", WaiterConfig=FAST)


def test_invalid_inputs(sm, sk) -> None:  # type: ignore[no-untyped-def]
    message = expect_error(
        sm.create_model,
        "ValidationException",
        ModelName="bad_name!",
        ExecutionRoleArn=ROLE,
        PrimaryContainer=sk_container(),
    )
    assert message.startswith(
        "1 validation error detected: Value 'bad_name!' at 'modelName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern"
    ), message
    long_name = "a" * 64
    message = expect_error(
        sm.create_model,
        "ValidationException",
        ModelName=long_name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer=sk_container(),
    )
    assert message.startswith(
        f"1 validation error detected: Value '{long_name}' at 'modelName' failed to satisfy "
        "constraint: Member must have length less than or equal to 63"
    ), message
    expect_error(
        sm.create_endpoint,
        "ValidationException",
        "1 validation error detected",
        "'endpointName'",
        "failed to satisfy constraint",
        EndpointName="-leading-hyphen",
        EndpointConfigName="x",
    )
    # 64 characters break both the length and the {0,62} pattern of EndpointConfigName.
    expect_error(
        sm.create_endpoint_config,
        "ValidationException",
        "2 validation errors detected",
        "'endpointConfigName' failed to satisfy constraint: Member must have length less than or equal to 63",
        "Member must satisfy regular expression pattern",
        EndpointConfigName="c" * 64,
        ProductionVariants=[variant("x")],
    )
    # Two violations in one request are both reported.
    expect_error(
        sm.create_model,
        "ValidationException",
        "2 validation errors detected",
        ModelName="bad_name!",
        ExecutionRoleArn="not-an-iam-role-arn-at-all",
        PrimaryContainer=sk_container(),
    )

    sm.create_model(ModelName="enum-model", ExecutionRoleArn=ROLE, PrimaryContainer=sk_container())
    message = expect_error(
        sm.create_endpoint_config,
        "ValidationException",
        "1 validation error detected",
        "Value 'ml.fake.huge'",
        "failed to satisfy constraint",
        "Member must satisfy enum value set",
        EndpointConfigName="enum-cfg",
        ProductionVariants=[variant("enum-model", InstanceType="ml.fake.huge")],
    )
    assert "ml.m5.large" in message
    expect_error(
        sm.describe_endpoint_config,
        "ValidationException",
        "Could not find endpoint configuration",
        EndpointConfigName="enum-cfg",
    )
    expect_error(
        sm.create_endpoint_config,
        "ValidationException",
        "Variant names must be unique",
        EndpointConfigName="dup-variants",
        ProductionVariants=[variant("enum-model"), variant("enum-model")],
    )

    container = sk_container()
    expect_error(
        sm.create_model,
        "ValidationException",
        "Exactly one of PrimaryContainer or Containers must be specified.",
        ModelName="both-containers",
        ExecutionRoleArn=ROLE,
        PrimaryContainer=container,
        Containers=[container],
    )
    expect_error(
        sm.create_model,
        "ValidationException",
        "Exactly one of PrimaryContainer or Containers must be specified.",
        ModelName="no-containers",
        ExecutionRoleArn=ROLE,
    )
    expect_error(sm.describe_model, "ValidationException", "Could not find model", ModelName="both-containers")


def test_unknown_operation_and_malformed_body(server) -> None:  # type: ignore[no-untyped-def]
    status, headers, body = raw_post(server.url, "SageMaker.NoSuchThing", b"{}")
    assert status == 400
    assert body["__type"] == "UnknownOperationException"
    assert "NoSuchThing" in body["message"]
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert len(headers["x-amzn-requestid"]) == 36

    status, _, body = raw_post(server.url, "SageMaker.ListModels", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException")
    assert "not valid JSON" in body["message"]
    status, _, body = raw_post(server.url, "SageMaker.ListModels", b"[1, 2]")
    assert (status, body["__type"]) == (400, "SerializationException")
    status, _, body = raw_post(server.url, "NotSageMaker.ListModels", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    # An unsigned raw call with a good body works (JSON 1.1 wire format, epoch-second timestamps).
    status, headers, body = raw_post(server.url, "SageMaker.ListEndpoints", b"{}")
    assert status == 200 and "Endpoints" in body
    assert headers["content-type"] == "application/x-amz-json-1.1"


# --- deployment failures ----------------------------------------------------------------------


def test_missing_artifact_fails_and_failed_endpoint_deletes(sm) -> None:  # type: ignore[no-untyped-def]
    uri = "s3://models/nowhere/model.tar.gz"
    create_all(sm, "fail-missing", {"Image": SKLEARN_IMAGE, "ModelDataUrl": uri})
    with pytest.raises(WaiterError) as info:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="fail-missing", WaiterConfig=FAST)
    assert "Failed" in str(info.value)
    desc = sm.describe_endpoint(EndpointName="fail-missing")
    assert desc["EndpointStatus"] == "Failed"
    assert uri in desc["FailureReason"]
    assert "Failed to download model data" in desc["FailureReason"]
    # Only DeleteEndpoint is allowed on a Failed endpoint.
    expect_error(
        sm.update_endpoint,
        "ValidationException",
        "Cannot update endpoint",
        "Failed",
        EndpointName="fail-missing",
        EndpointConfigName="fail-missing",
    )
    sm.delete_endpoint(EndpointName="fail-missing")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="fail-missing", WaiterConfig=FAST)
    expect_error(sm.describe_endpoint, "ValidationException", "Could not find endpoint", EndpointName="fail-missing")
    # The name can be reused once it is gone.
    sm.create_endpoint(EndpointName="fail-missing", EndpointConfigName="fail-missing")
    assert wait_status(sm, "fail-missing", ("Failed", "InService"))["EndpointStatus"] == "Failed"
    sm.delete_endpoint(EndpointName="fail-missing")


def test_model_fn_raising_fails_endpoint(server, sm) -> None:  # type: ignore[no-untyped-def]
    server.put_object("s3://models/boom/model.tar.gz", tarball({"code/inference.py": BOOM_CODE}))
    create_all(sm, "fail-boom", {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/boom/model.tar.gz"})
    desc = wait_status(sm, "fail-boom", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "Failed"
    assert "ValueError" in desc["FailureReason"] and "boom" in desc["FailureReason"]
    assert len(desc["FailureReason"]) <= 1024
    assert "boom" in server.logs("fail-boom")
    sm.delete_endpoint(EndpointName="fail-boom")


def test_bad_archives_fail_endpoint(server, sm, sk) -> None:  # type: ignore[no-untyped-def]
    good, _ = sklearn_model()
    server.put_object("s3://models/trunc/model.tar.gz", good[: len(good) // 2])
    create_all(sm, "fail-trunc", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/trunc/model.tar.gz"})

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        for member, data in (("model.joblib", b"x"), ("../evil.txt", b"pwned")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    server.put_object("s3://models/evil/model.tar.gz", evil.getvalue())
    create_all(sm, "fail-evil", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/evil/model.tar.gz"})

    image = "123.dkr.ecr.us-east-1.amazonaws.com/my-custom:latest"
    create_all(sm, "fail-image", {"Image": image, "ModelDataUrl": "s3://models/cp/model.tar.gz"})

    desc = wait_status(sm, "fail-trunc", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "Failed"
    assert "s3://models/trunc/model.tar.gz" in desc["FailureReason"]
    assert "archive" in desc["FailureReason"] and "valid tar.gz" in desc["FailureReason"]

    desc = wait_status(sm, "fail-evil", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "Failed"
    assert "unsafe archive member" in desc["FailureReason"]
    assert "s3://models/evil/model.tar.gz" in desc["FailureReason"]
    assert not list(server.data_dir.parent.rglob("evil.txt"))
    assert not [p for p in (server.data_dir / "model-cache").iterdir() if p.name.startswith(".extract-")]

    desc = wait_status(sm, "fail-image", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "Failed"
    assert image in desc["FailureReason"] and "not supported" in desc["FailureReason"]

    for n in ("fail-trunc", "fail-evil", "fail-image"):
        sm.delete_endpoint(EndpointName=n)
    for n in ("fail-trunc", "fail-evil", "fail-image"):
        sm.get_waiter("endpoint_deleted").wait(EndpointName=n, WaiterConfig=FAST)


def test_model_data_source_uncompressed_prefix(server, sm, rt, sk) -> None:  # type: ignore[no-untyped-def]
    import joblib

    buf = io.BytesIO()
    joblib.dump(sk, buf)
    server.put_object("s3://bucket/prefix/model.joblib", buf.getvalue())
    source = {"S3DataSource": {"S3Uri": "s3://bucket/prefix/", "S3DataType": "S3Prefix", "CompressionType": "None"}}
    create_all(sm, "mds-prefix", {"Image": SKLEARN_IMAGE, "ModelDataSource": source})
    assert sm.describe_model(ModelName="mds-prefix")["PrimaryContainer"]["ModelDataSource"] == source
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mds-prefix", WaiterConfig=FAST)
    x, _ = diabetes()
    row = csv_row(x[3])
    resp = rt.invoke_endpoint(EndpointName="mds-prefix", ContentType="text/csv", Body=row)
    got = json.loads(resp["Body"].read())
    expected = sk.predict([[float(v) for v in row.split(",")]])[0]
    assert abs(got[0] - expected) < 1e-9
    expect_error(
        sm.create_model,
        "ValidationException",
        "ModelDataUrl and ModelDataSource cannot both be specified",
        ModelName="mds-both",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": SKLEARN_IMAGE,
            "ModelDataSource": source,
            "ModelDataUrl": "s3://models/cp/model.tar.gz",
        },
    )
    sm.delete_endpoint(EndpointName="mds-prefix")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="mds-prefix", WaiterConfig=FAST)
