"""Production variants, zero-downtime updates, shadow traffic and autoscaling (issue 4),
driven by boto3 against a real server."""

from __future__ import annotations

import pickle
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.helpers import PYTHON_IMAGE, ROLE, XGBOOST_IMAGE, Server, csv_row, diabetes, tarball, wait_status

pytestmark = pytest.mark.slow

# Each "model" answers a constant so a response tells which fleet served it.
CONSTANT_MODEL = """
import os
def model_fn(model_dir):
    return os.environ["ANSWER"]
def input_fn(data, content_type):
    return data
def predict_fn(data, model):
    if model == "fail":
        raise RuntimeError("this model fails on every request")
    return model
def output_fn(prediction, accept):
    return prediction, "text/plain"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("variants") / "data",
        env={"MODELHOST_AUTOSCALE_INTERVAL": "0.5", "MODELHOST_AUTOSCALE_WINDOW": "3", "MODELHOST_STOP_GRACE": "5"},
    ).start()
    srv.put_object("s3://models/constant/model.tar.gz", tarball({"code/inference.py": CONSTANT_MODEL}))
    try:
        yield srv
    finally:
        srv.stop()


def constant_model(sm, name: str, answer: str) -> None:  # type: ignore[no-untyped-def]
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": "s3://models/constant/model.tar.gz",
            "Environment": {"ANSWER": answer},
        },
    )


def config(sm, name: str, variants: list[tuple[str, str, float, int]]) -> None:  # type: ignore[no-untyped-def]
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": m,
                "InitialVariantWeight": w,
                "InitialInstanceCount": n,
                "InstanceType": "ml.m5.large",
            }
            for v, m, w, n in variants
        ],
    )


class Load:
    """A steady request loop of several clients; records every answer and every failure."""

    def __init__(self, rt, endpoint: str, clients: int = 4) -> None:  # type: ignore[no-untyped-def]
        self.rt, self.endpoint = rt, endpoint
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.rt.invoke_endpoint(EndpointName=self.endpoint, ContentType="text/plain", Body=b"x")
                answer = resp["Body"].read().decode()
                with self._lock:
                    self.answers[answer] += 1
            except ClientError as exc:
                with self._lock:
                    self.failures.append(f"{exc.response['Error']['Code']}: {exc.response['Error']['Message']}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def total(self) -> int:
        with self._lock:
            return sum(self.answers.values())


def test_chapter_two_variant_flow(server: Server) -> None:
    """The book chapter's boto3 flow: 9:1 split, TargetVariant, 5:5, then one variant."""
    import xgboost as xgb

    x, y = diabetes()
    sm = server.clients()[0]
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
    smrt = session.client(service_name="runtime.sagemaker", endpoint_url=server.url)
    predictions = {}
    for i, depth in enumerate((2, 4), start=1):
        booster = xgb.train({"max_depth": depth}, xgb.DMatrix(x, label=y), num_boost_round=5)
        server.put_object(f"s3://models/xgb{i}/model.tar.gz", tarball({"xgboost-model": pickle.dumps(booster)}))
        sm.create_model(
            ModelName=f"xgb-model-{i}",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": f"s3://models/xgb{i}/model.tar.gz"},
        )
        predictions[f"variant-{i}"] = booster
    production_variants = [
        {
            "VariantName": "variant-1",
            "ModelName": "xgb-model-1",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 9,
            "InstanceType": "ml.t2.medium",
        },
        {
            "VariantName": "variant-2",
            "ModelName": "xgb-model-2",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1,
            "InstanceType": "ml.t2.medium",
        },
    ]
    endpoint_config_name = "xgboost-two-models-epc"
    sm.create_endpoint_config(
        EndpointConfigName=endpoint_config_name,
        ProductionVariants=production_variants,
        Tags=[{"Key": "Name", "Value": endpoint_config_name}, {"Key": "Algorithm", "Value": "xgboost"}],
    )
    endpoint_name = "xgboost-two-models-ep"
    sm.create_endpoint(
        EndpointName=endpoint_name,
        EndpointConfigName=endpoint_config_name,
        Tags=[
            {"Key": "Name", "Value": endpoint_name},
            {"Key": "Algorithm", "Value": "xgboost"},
            {"Key": "Environment", "Value": "development"},
        ],
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint_name, WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    desc = sm.describe_endpoint(EndpointName=endpoint_name)
    assert [(v["VariantName"], v["CurrentWeight"], v["CurrentInstanceCount"]) for v in desc["ProductionVariants"]] == [
        ("variant-1", 9.0, 1),
        ("variant-2", 1.0, 1),
    ]

    test_sample = csv_row(x[0])

    def split(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            response = smrt.invoke_endpoint(EndpointName=endpoint_name, ContentType="text/csv", Body=test_sample)
            seen[response["InvokedProductionVariant"]] += 1
        return seen

    seen = split(600)
    # share of variant-2 is 1/10: 60 expected, sd ~7.3; allow 4 sd
    assert abs(seen["variant-2"] - 60) <= 30, seen

    row = [[float(v) for v in test_sample.split(",")]]
    for v in ["variant-1", "variant-2"]:
        response = smrt.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="text/csv", Body=test_sample, TargetVariant=v
        )
        assert response["InvokedProductionVariant"] == v
        expected = predictions[v].predict(xgb.DMatrix(row))[0]
        assert abs(float(response["Body"].read().decode().strip()) - expected) < 1e-4

    sm.update_endpoint_weights_and_capacities(
        EndpointName=endpoint_name,
        DesiredWeightsAndCapacities=[
            {"VariantName": "variant-1", "DesiredWeight": 5},
            {"VariantName": "variant-2", "DesiredWeight": 5},
        ],
    )
    desc = wait_status(sm, endpoint_name, ("InService",))
    assert [(v["CurrentWeight"], v["DesiredWeight"]) for v in desc["ProductionVariants"]] == [(5.0, 5.0), (5.0, 5.0)]
    seen = split(400)
    assert abs(seen["variant-2"] - 200) <= 45, seen  # sd 10

    production_variants_2 = [
        {
            "VariantName": "variant-2",
            "ModelName": "xgb-model-2",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1,
            "InstanceType": "ml.t2.medium",
        }
    ]
    endpoint_config_name_2 = "xgboost-one-model-epc"
    sm.create_endpoint_config(
        EndpointConfigName=endpoint_config_name_2,
        ProductionVariants=production_variants_2,
        Tags=[{"Key": "Name", "Value": endpoint_config_name_2}, {"Key": "Algorithm", "Value": "xgboost"}],
    )
    sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=endpoint_config_name_2)
    assert sm.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"] == "Updating"
    desc = wait_status(sm, endpoint_name, ("InService",))
    assert desc["EndpointConfigName"] == endpoint_config_name_2
    assert [v["VariantName"] for v in desc["ProductionVariants"]] == ["variant-2"]
    assert split(20) == Counter({"variant-2": 20})
    sm.delete_endpoint(EndpointName=endpoint_name)
    sm.delete_endpoint_config(EndpointConfigName=endpoint_config_name)
    sm.delete_endpoint_config(EndpointConfigName=endpoint_config_name_2)


def test_zero_failures_across_updates_and_scaling(server: Server) -> None:
    sm, rt = server.clients()
    for answer in ("blue", "green", "canary", "linear"):
        constant_model(sm, f"zd-{answer}", answer)
    config(sm, "zd-blue", [("AllTraffic", "zd-blue", 1.0, 1)])
    config(sm, "zd-green", [("AllTraffic", "zd-green", 1.0, 2)])
    config(sm, "zd-canary", [("AllTraffic", "zd-canary", 1.0, 2)])
    config(sm, "zd-linear", [("AllTraffic", "zd-linear", 1.0, 2)])
    sm.create_endpoint(EndpointName="zd", EndpointConfigName="zd-blue")
    wait_status(sm, "zd", ("InService",))
    with Load(rt, "zd") as load:
        time.sleep(1)
        # scale out, then in, in place
        sm.update_endpoint_weights_and_capacities(
            EndpointName="zd", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
        )
        desc = wait_status(sm, "zd", ("InService",))
        assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 3
        time.sleep(1)
        sm.update_endpoint_weights_and_capacities(
            EndpointName="zd",
            DesiredWeightsAndCapacities=[
                {"VariantName": "AllTraffic", "DesiredInstanceCount": 1, "DesiredWeight": 2.0}
            ],
        )
        desc = wait_status(sm, "zd", ("InService",))
        assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
        assert desc["ProductionVariants"][0]["CurrentWeight"] == 2.0
        before = load.total()
        # blue/green all at once
        sm.update_endpoint(
            EndpointName="zd",
            EndpointConfigName="zd-green",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 1},
                    "TerminationWaitInSeconds": 1,
                }
            },
        )
        assert wait_status(sm, "zd", ("InService",))["EndpointConfigName"] == "zd-green"
        # canary: one of two green instances' share first, baked, then the rest
        sm.update_endpoint(
            EndpointName="zd",
            EndpointConfigName="zd-canary",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "WaitIntervalInSeconds": 2,
                        "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
                    }
                }
            },
        )
        saw_baking = False
        while True:
            desc = sm.describe_endpoint(EndpointName="zd")
            pending = desc.get("PendingDeploymentSummary", {}).get("ProductionVariants", [])
            saw_baking |= any(s["Status"] == "Baking" for p in pending for s in p.get("VariantStatus", []))
            if desc["EndpointStatus"] == "InService":
                break
            time.sleep(0.2)
        assert desc["EndpointConfigName"] == "zd-canary" and saw_baking
        # linear: 50% steps
        sm.update_endpoint(
            EndpointName="zd",
            EndpointConfigName="zd-linear",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "LINEAR",
                        "WaitIntervalInSeconds": 1,
                        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    }
                }
            },
        )
        desc = wait_status(sm, "zd", ("InService",))
        assert desc["EndpointConfigName"] == "zd-linear"
        assert desc["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "LINEAR"
        time.sleep(1)
    assert load.failures == []
    assert load.total() > before > 0
    # every fleet served while it was live; the canary phase mixed old and new
    assert set(load.answers) == {"blue", "green", "canary", "linear"}, load.answers
    sm.delete_endpoint(EndpointName="zd")


def test_rollback_when_alarm_trips(server: Server) -> None:
    sm, rt = server.clients()
    constant_model(sm, "rb-good", "good")
    constant_model(sm, "rb-bad", "fail")
    config(sm, "rb-good", [("AllTraffic", "rb-good", 1.0, 1)])
    config(sm, "rb-bad", [("AllTraffic", "rb-bad", 1.0, 2)])
    sm.create_endpoint(EndpointName="rb", EndpointConfigName="rb-good")
    wait_status(sm, "rb", ("InService",))
    with Load(rt, "rb", clients=2) as load:
        sm.update_endpoint(
            EndpointName="rb",
            EndpointConfigName="rb-bad",
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "WaitIntervalInSeconds": 30,
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    }
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "Invocation5XXErrors > 0"}]},
            },
        )
        statuses = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            desc = sm.describe_endpoint(EndpointName="rb")
            statuses.add(desc["EndpointStatus"])
            if desc["EndpointStatus"] == "InService" and "FailureReason" in desc:
                break
            time.sleep(0.1)
        tripped_at = load.total()
        time.sleep(1)
    assert desc["EndpointConfigName"] == "rb-good"
    assert "Invocation5XXErrors > 0" in desc["FailureReason"]
    assert "Updating" in statuses
    assert "PendingDeploymentSummary" not in desc
    # only canary requests failed, well before the 30 s bake ended; then all traffic is back on blue
    assert load.failures and all(f.startswith("ModelError") for f in load.failures)
    assert load.total() > tripped_at
    x = rt.invoke_endpoint(EndpointName="rb", ContentType="text/plain", Body=b"x")["Body"].read()
    assert x == b"good"
    sm.delete_endpoint(EndpointName="rb")


def test_update_bad_inputs(server: Server) -> None:
    sm, _ = server.clients()
    constant_model(sm, "bad-a", "a")
    config(sm, "bad-a", [("AllTraffic", "bad-a", 1.0, 1)])
    config(sm, "bad-b", [("AllTraffic", "bad-a", 1.0, 2)])
    sm.create_endpoint(EndpointName="bad", EndpointConfigName="bad-a")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/bad"
    with pytest.raises(ClientError) as err:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="bad", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 2}]
        )
    assert err.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": f'Cannot update in-progress endpoint "{arn}".',
    }
    wait_status(sm, "bad", ("InService",))
    cases = [
        (
            lambda: sm.update_endpoint_weights_and_capacities(
                EndpointName="bad", DesiredWeightsAndCapacities=[{"VariantName": "nope", "DesiredWeight": 2}]
            ),
            f'The variant(s) "[nope]" is/are not present in the endpoint {arn}.',
        ),
        (
            lambda: sm.update_endpoint(
                EndpointName="bad",
                EndpointConfigName="bad-b",
                DeploymentConfig={
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 1}
                    }
                },
            ),
            "TrafficRoutingConfiguration.CanarySize is required for CANARY traffic routing.",
        ),
        (
            lambda: sm.update_endpoint(
                EndpointName="bad",
                EndpointConfigName="bad-b",
                DeploymentConfig={
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 1}
                    },
                    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "my-cloudwatch-alarm"}]},
                },
            ),
            "Alarm 'my-cloudwatch-alarm' is not a rule modelhost can evaluate",
        ),
        (
            lambda: sm.update_endpoint(EndpointName="bad", EndpointConfigName="bad-a"),
            "is already using endpoint configuration bad-a",
        ),
        (
            lambda: sm.update_endpoint(EndpointName="bad", EndpointConfigName="nope"),
            'Could not find endpoint configuration "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/nope".',
        ),
    ]
    for call, message in cases:
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert message in err.value.response["Error"]["Message"]
    assert sm.describe_endpoint(EndpointName="bad")["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="bad")


def test_shadow_variant_gets_copies_and_never_changes_answers(server: Server) -> None:
    sm, rt = server.clients()
    constant_model(sm, "sh-live", "live")
    constant_model(sm, "sh-shadow", "fail")  # a failing shadow must not matter
    sm.create_endpoint_config(
        EndpointConfigName="sh",
        ProductionVariants=[
            {"VariantName": "live", "ModelName": "sh-live", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        ShadowProductionVariants=[
            {
                "VariantName": "shadow",
                "ModelName": "sh-shadow",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sm.create_endpoint(EndpointName="sh", EndpointConfigName="sh")
    desc = wait_status(sm, "sh", ("InService",))
    assert [v["VariantName"] for v in desc["ShadowProductionVariants"]] == ["shadow"]
    for _ in range(50):
        resp = rt.invoke_endpoint(EndpointName="sh", ContentType="text/plain", Body=b"x")
        assert resp["InvokedProductionVariant"] == "live" and resp["Body"].read() == b"live"
    time.sleep(0.5)
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    shadow_calls = [
        line
        for line in metrics.splitlines()
        if line.startswith('modelhost_invocations_total{endpoint="sh",variant="shadow"}')
    ]
    assert shadow_calls and float(shadow_calls[0].split()[-1]) == 50.0
    assert "shadow request failed" in server.logs("sh")
    sm.delete_endpoint(EndpointName="sh")


def test_target_tracking_scales_out_and_back_in(server: Server) -> None:
    sm, rt = server.clients()
    aas = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1").client(
        "application-autoscaling", endpoint_url=server.url
    )
    constant_model(sm, "as", "a")
    config(sm, "as", [("AllTraffic", "as", 1.0, 1)])
    sm.create_endpoint(EndpointName="as", EndpointConfigName="as")
    wait_status(sm, "as", ("InService",))
    resource = "endpoint/as/variant/AllTraffic"
    dim = "sagemaker:variant:DesiredInstanceCount"
    with pytest.raises(ClientError) as err:
        aas.put_scaling_policy(
            PolicyName="p",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dim,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={"TargetValue": 10.0},
        )
    assert err.value.response["Error"]["Code"] == "ObjectNotFoundException"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim, MinCapacity=1, MaxCapacity=3
    )
    aas.put_scaling_policy(
        PolicyName="invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=dim,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 120.0,  # invocations per instance per minute
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleOutCooldown": 1,
            "ScaleInCooldown": 1,
        },
    )
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(resource, 1, 3)]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
    assert policies[0]["PolicyName"] == "invocations" and len(policies[0]["Alarms"]) == 2

    def count() -> int:
        return sm.describe_endpoint(EndpointName="as")["ProductionVariants"][0]["CurrentInstanceCount"]

    with Load(rt, "as", clients=2) as load:
        deadline = time.monotonic() + 60
        while count() < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert count() == 3  # clamped to MaxCapacity
    assert load.failures == []
    deadline = time.monotonic() + 60
    while count() > 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert count() == 1
    wait_status(sm, "as", ("InService",))
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingActivities"]
    descriptions = [a["Description"] for a in activities]
    assert "Setting desired instance count to 3." in descriptions
    assert descriptions[0] == "Setting desired instance count to 1."  # newest first
    assert all(a["StatusCode"] == "Successful" and "triggered policy invocations" in a["Cause"] for a in activities)
    aas.delete_scaling_policy(
        PolicyName="invocations", ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim
    )
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    sm.delete_endpoint(EndpointName="as")


def test_autoscaling_bad_inputs(server: Server) -> None:
    aas = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1").client(
        "application-autoscaling", endpoint_url=server.url
    )
    dim = "sagemaker:variant:DesiredInstanceCount"
    cases = [
        (
            dict(
                ServiceNamespace="sagemaker",
                ResourceId="endpoint/nope",
                ScalableDimension=dim,
                MinCapacity=1,
                MaxCapacity=2,
            ),
            "ValidationException",
            "Unsupported resource ID endpoint/nope",
        ),
        (
            dict(
                ServiceNamespace="sagemaker",
                ResourceId="endpoint/ghost/variant/AllTraffic",
                ScalableDimension=dim,
                MinCapacity=1,
                MaxCapacity=2,
            ),
            "ValidationException",
            "The endpoint ghost does not exist.",
        ),
        (
            dict(
                ServiceNamespace="ecs",
                ResourceId="service/a/b",
                ScalableDimension="ecs:service:DesiredCount",
                MinCapacity=1,
                MaxCapacity=2,
            ),
            "ValidationException",
            "Unsupported service namespace ecs",
        ),
    ]
    for kwargs, code, message in cases:
        with pytest.raises(ClientError) as err:
            aas.register_scalable_target(**kwargs)
        assert err.value.response["Error"]["Code"] == code
        assert message in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        aas.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId="endpoint/ghost/variant/v", ScalableDimension=dim
        )
    assert err.value.response["Error"]["Code"] == "ObjectNotFoundException"
    assert "No scalable target registered for service namespace: sagemaker" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        aas.describe_scalable_targets(ServiceNamespace="sagemaker", NextToken="not-a-token")
    assert err.value.response["Error"] == {"Code": "ValidationException", "Message": "Invalid NextToken: not-a-token"}
