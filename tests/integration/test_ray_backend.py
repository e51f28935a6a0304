"""The Ray backend (issue 16) against a real local Ray cluster (a head and a second node joined with
``ray start --address``), real PostgreSQL for the metadata and moto's S3 for every s3:// URI: the same
boto3 flows as on the local backend, answers byte-identical to a local-backend server's."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import psutil
import pytest
from botocore.exceptions import ClientError

from tests.helpers import (
    PYTHON_IMAGE,
    ROLE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    diabetes,
    moto_s3,
    moto_server,
    sklearn_model,
    tarball,
    wait_status,
)
from tests.pgsql import postgres
from tests.raycluster import RayCluster, ray_cluster

pytestmark = pytest.mark.slow

CONSTANT_MODEL = """
import os
def model_fn(model_dir):
    return os.environ["ANSWER"]
def input_fn(data, content_type):
    return data
def predict_fn(data, model):
    return model
def output_fn(prediction, accept):
    return prediction, "text/plain"
"""
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
SKLEARN_URL = "s3://ray-models/sklearn/model.tar.gz"
CONSTANT_URL = "s3://ray-models/constant/model.tar.gz"


class Cluster:
    """Everything a module shares: the Ray cluster, PostgreSQL, moto, a Ray-backend and a local-backend server."""

    def __init__(self, ray: RayCluster, pg_url: str, s3_url: str, ray_server: Server, local: Server) -> None:
        self.ray, self.pg_url, self.s3_url, self.server, self.local = ray, pg_url, s3_url, ray_server, local


def ray_env(cluster: RayCluster, pg_url: str, s3_url: str) -> dict[str, str]:
    return {
        **cluster.env,
        **AWS_ENV,
        "MODELHOST_BACKEND": "ray",
        "MODELHOST_DB_URL": pg_url,
        "MODELHOST_S3_ENDPOINT_URL": s3_url,
        # a 2+1-CPU test cluster holds several "ml.m5.large" replicas
        "MODELHOST_RAY_CPUS_PER_VCPU": "0.1",
        "MODELHOST_RAY_MEMORY_SHARE": "0",
        "MODELHOST_PING_INTERVAL": "1",
        "MODELHOST_AUTOSCALE_INTERVAL": "0.5",
        "MODELHOST_AUTOSCALE_WINDOW": "3",
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("ray")
    with ray_cluster(head_cpus=2, worker_cpus=1) as ray, postgres() as pg_url, moto_server(tmp / "moto.log") as s3:
        client = moto_s3(s3)
        client.create_bucket(Bucket="ray-models")
        client.put_object(Bucket="ray-models", Key="sklearn/model.tar.gz", Body=sklearn_model()[0])
        client.put_object(
            Bucket="ray-models", Key="constant/model.tar.gz", Body=tarball({"code/inference.py": CONSTANT_MODEL})
        )
        ray_server = Server(tmp / "ray-data", env=ray_env(ray, pg_url, s3)).start()
        local = Server(tmp / "local-data", env={**AWS_ENV, "MODELHOST_S3_ENDPOINT_URL": s3}).start()
        try:
            yield Cluster(ray, pg_url, s3, ray_server, local)
        finally:
            ray_server.stop()
            local.stop()


def replica_pids(app_part: str) -> list[int]:
    """Ray Serve replica processes (their title is ``ray::ServeReplica:<app>:<deployment>``)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::ServeReplica:") and app_part in cmd[0]:
            pids.append(proc.pid)
    return pids


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def create(sm: Any, name: str, variants: list[dict[str, Any]], models: dict[str, dict[str, Any]]) -> None:
    for model, container in models.items():
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"InstanceType": "ml.m5.large", **v} for v in variants],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def sklearn_variant(model: str, count: int = 1, name: str = "AllTraffic", weight: float = 1.0) -> dict[str, Any]:
    return {"VariantName": name, "ModelName": model, "InitialInstanceCount": count, "InitialVariantWeight": weight}


def test_create_invoke_delete_byte_identical_to_local(env: Cluster) -> None:
    x, _ = diabetes()
    rows = "\n".join(csv_row(r) for r in x[:5])
    npy = io.BytesIO()
    np.save(npy, x[:3])
    requests = [
        ("text/csv", "text/csv", rows.encode()),
        ("text/csv", "application/json", rows.encode()),
        ("application/json", "application/json", f"[{x[0].tolist()}]".encode()),
        ("application/x-npy", "application/x-npy", npy.getvalue()),
    ]
    answers = []
    for srv in (env.server, env.local):
        sm, rt = srv.clients()
        create(sm, "sk", [sklearn_variant("sk")], {"sk": {"Image": SKLEARN_IMAGE, "ModelDataUrl": SKLEARN_URL}})
        desc = wait_status(sm, "sk", ("InService", "Failed"), timeout=180)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        got = []
        for content_type, accept, body in requests:
            r = rt.invoke_endpoint(EndpointName="sk", ContentType=content_type, Accept=accept, Body=body)
            got.append((r["ContentType"], r["InvokedProductionVariant"], r["Body"].read()))
        with pytest.raises(ClientError) as bad:
            rt.invoke_endpoint(EndpointName="sk", ContentType="text/csv", Body=b"1,2,not-a-number")
        got.append((bad.value.response["Error"]["Code"], bad.value.response["Error"]["Message"], b""))
        answers.append(got)
    assert answers[0] == answers[1]
    assert len(replica_pids("-sk--AllTraffic-")) == 1
    sm, rt = env.server.clients()
    sm.delete_endpoint(EndpointName="sk")
    wait_for(lambda: not replica_pids("-sk--AllTraffic-"), 60, "the Serve application to go")
    wait_for(lambda: not sm.list_endpoints(NameContains="sk")["Endpoints"], 30, "the endpoint row to go")
    with pytest.raises(ClientError) as gone:
        sm.describe_endpoint(EndpointName="sk")
    assert gone.value.response["Error"]["Code"] == "ValidationException"


def test_failed_model_reports_the_load_error(env: Cluster) -> None:
    sm, _ = env.server.clients()
    client = moto_s3(env.s3_url)
    broken = "def model_fn(model_dir):\n    raise ValueError('weights are corrupt')\n"
    client.put_object(Bucket="ray-models", Key="broken/model.tar.gz", Body=tarball({"code/inference.py": broken}))
    create(
        sm,
        "broken",
        [sklearn_variant("broken")],
        {"broken": {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://ray-models/broken/model.tar.gz"}},
    )
    desc = wait_status(sm, "broken", ("InService", "Failed"), timeout=180)
    assert desc["EndpointStatus"] == "Failed"
    assert "weights are corrupt" in desc["FailureReason"]
    sm.delete_endpoint(EndpointName="broken")


def constant(answer: str) -> dict[str, Any]:
    return {"Image": PYTHON_IMAGE, "ModelDataUrl": CONSTANT_URL, "Environment": {"ANSWER": answer}}


def test_weighted_variants_target_variant_and_replica_death(env: Cluster) -> None:
    sm, rt = env.server.clients()
    create(
        sm,
        "two",
        [sklearn_variant("two-a", 2, "A", 1.0), sklearn_variant("two-b", 1, "B", 1.0)],
        {"two-a": constant("a"), "two-b": constant("b")},
    )
    desc = wait_status(sm, "two", ("InService", "Failed"), timeout=180)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    seen = Counter(rt.invoke_endpoint(EndpointName="two", Body=b"x")["Body"].read() for _ in range(60))
    assert set(seen) == {b"a", b"b"} and min(seen.values()) > 10, seen
    for _ in range(5):
        r = rt.invoke_endpoint(EndpointName="two", Body=b"x", TargetVariant="B")
        assert (r["Body"].read(), r["InvokedProductionVariant"]) == (b"b", "B")
    # kill -9 one of A's replicas under load: only requests in flight on it may fail
    pids = replica_pids("-two--A-")
    assert len(pids) == 2
    results: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        _, client = env.server.clients()
        while not stop.is_set():
            try:
                client.invoke_endpoint(EndpointName="two", Body=b"x", TargetVariant="A")
                results["ok"] += 1
            except ClientError:
                results["failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    psutil.Process(pids[0]).kill()
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join()
    assert results["ok"] > 20 and results["failed"] <= 4, results
    assert sm.describe_endpoint(EndpointName="two")["EndpointStatus"] == "InService"
    wait_for(
        lambda: len(replica_pids("-two--A-")) == 2 and pids[0] not in replica_pids("-two--A-"), 90, "a new replica"
    )
    sm.delete_endpoint(EndpointName="two")


def test_autoscaling_sets_num_replicas_out_and_in(env: Cluster) -> None:
    """Application Auto Scaling target tracking (modelhost's autoscaler) drives Serve's num_replicas."""
    sm, rt = env.server.clients()
    aas = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1").client(
        "application-autoscaling", endpoint_url=env.server.url
    )
    create(sm, "cap", [sklearn_variant("cap")], {"cap": constant("c")})
    assert wait_status(sm, "cap", ("InService", "Failed"), timeout=180)["EndpointStatus"] == "InService"
    first = replica_pids("-cap--AllTraffic-")
    resource, dim = "endpoint/cap/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim, MinCapacity=1, MaxCapacity=2
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

    def count() -> int:
        return int(sm.describe_endpoint(EndpointName="cap")["ProductionVariants"][0]["CurrentInstanceCount"])

    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        _, client = env.server.clients()
        while not stop.is_set():
            try:
                assert client.invoke_endpoint(EndpointName="cap", Body=b"x")["Body"].read() == b"c"
            except (ClientError, AssertionError) as exc:
                failures.append(str(exc))
            time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: count() == 2 and len(replica_pids("-cap--AllTraffic-")) == 2, 90, "scale-out to 2")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    # the first replica was kept: num_replicas changed in place (a lightweight update, no restart)
    assert set(first) <= set(replica_pids("-cap--AllTraffic-"))
    wait_for(lambda: count() == 1 and len(replica_pids("-cap--AllTraffic-")) == 1, 90, "scale-in to 1")
    assert rt.invoke_endpoint(EndpointName="cap", Body=b"x")["Body"].read() == b"c"
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingActivities"]
    assert [a["Description"] for a in activities][:2] == [
        "Setting desired instance count to 1.",
        "Setting desired instance count to 2.",
    ]
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim)
    wait_status(sm, "cap", ("InService",))
    sm.delete_endpoint(EndpointName="cap")


def test_canary_update_under_load_loses_nothing(env: Cluster) -> None:
    sm, rt = env.server.clients()
    create(sm, "canary", [sklearn_variant("canary-v1")], {"canary-v1": constant("v1")})
    assert wait_status(sm, "canary", ("InService", "Failed"), timeout=180)["EndpointStatus"] == "InService"
    sm.create_model(ModelName="canary-v2", ExecutionRoleArn=ROLE, PrimaryContainer=constant("v2"))
    sm.create_endpoint_config(
        EndpointConfigName="canary-2",
        ProductionVariants=[{**sklearn_variant("canary-v2"), "InstanceType": "ml.m5.large"}],
    )
    results: Counter[bytes] = Counter()
    stop = threading.Event()

    def load() -> None:
        _, client = env.server.clients()
        while not stop.is_set():
            try:
                results[client.invoke_endpoint(EndpointName="canary", Body=b"x")["Body"].read()] += 1
            except ClientError:
                results[b"failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    sm.update_endpoint(
        EndpointName="canary",
        EndpointConfigName="canary-2",
        DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    "WaitIntervalInSeconds": 2,
                },
                "TerminationWaitInSeconds": 0,
            }
        },
    )
    time.sleep(1)
    desc = wait_status(sm, "canary", ("InService", "Failed"), timeout=180)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    assert desc["EndpointConfigName"] == "canary-2"
    assert results[b"failed"] == 0 and results[b"v1"] > 0 and results[b"v2"] > 0, results
    wait_for(lambda: len(replica_pids("-canary--AllTraffic-")) == 1, 60, "the blue application to go")
    sm.delete_endpoint(EndpointName="canary")


def test_postgres_holds_the_metadata(env: Cluster) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(env.pg_url).connect() as conn:
        names = {r[0] for r in conn.execute(text("select name from models"))}
    assert {"sk", "two-a", "cap"} <= names
    assert not (Path(env.server.data_dir) / "modelhost.db").exists()


SLOW_UPPER = """
import time
def model_fn(model_dir):
    return None
def transform_fn(model, data, content_type, accept):
    time.sleep(0.4)
    return data.upper(), "text/plain"
"""


def test_async_on_ray_replicas_survives_kill9_of_the_front_door(env: Cluster) -> None:
    """InvokeEndpointAsync: the queue in PostgreSQL, the dispatcher feeding Ray replicas; kill -9 of the
    server with requests queued and in flight, restart: every accepted request has exactly one output."""
    s3 = moto_s3(env.s3_url)
    s3.create_bucket(Bucket="ray-async")
    s3.put_object(Bucket="ray-models", Key="upper/model.tar.gz", Body=tarball({"code/inference.py": SLOW_UPPER}))
    sm, rt = env.server.clients()
    sm.create_model(
        ModelName="upper",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://ray-models/upper/model.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="upper",
        ProductionVariants=[{**sklearn_variant("upper"), "InstanceType": "ml.m5.large"}],
        AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": "s3://ray-async/out"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},
        },
    )
    sm.create_endpoint(EndpointName="upper", EndpointConfigName="upper")
    assert wait_status(sm, "upper", ("InService", "Failed"), timeout=180)["EndpointStatus"] == "InService"
    ids = [f"r{i:02d}" for i in range(12)]
    for i in ids:
        rt.invoke_endpoint_async(
            EndpointName="upper", InferenceId=i, InputLocation=_put(s3, f"in/{i}", f"req {i}".encode())
        )

    def outputs() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket="ray-async", Prefix="out/").get("Contents", [])]

    wait_for(lambda: len(outputs()) >= 2, 60, "two outputs")
    env.server.kill9()
    assert len(outputs()) < len(ids), "everything finished before the kill"
    env.server.start()
    wait_for(lambda: len(outputs()) == len(ids), 120, "every output after the restart")
    assert sorted(outputs()) == sorted(f"out/{i}.out" for i in ids)
    for i in ids:
        assert s3.get_object(Bucket="ray-async", Key=f"out/{i}.out")["Body"].read() == f"REQ {i}".upper().encode()
    from sqlalchemy import create_engine, text

    with create_engine(env.pg_url).connect() as conn:
        rows = conn.execute(text("select inference_id, status from async_requests order by seq")).fetchall()
    assert [r[0] for r in rows] == ids and {r[1] for r in rows} == {"Completed"}
    # the restarted server replaced its predecessor's Serve application (one replica, not two)
    wait_for(lambda: len(replica_pids("-upper--AllTraffic-")) == 1, 60, "one replica of the async endpoint")

    # scale to zero (MinCapacity 0 on the backlog): 0 replicas = no Serve application; a request wakes it
    sm, rt = env.server.clients()
    aas = boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1").client(
        "application-autoscaling", endpoint_url=env.server.url
    )
    resource, dim = "endpoint/upper/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim, MinCapacity=0, MaxCapacity=1
    )
    aas.put_scaling_policy(
        PolicyName="backlog",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=dim,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": "upper"}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 1,
            "ScaleOutCooldown": 1,
        },
    )
    wait_for(lambda: not replica_pids("-upper--AllTraffic-"), 60, "scale-in to zero replicas")
    assert wait_status(sm, "upper", ("InService",))["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    rt.invoke_endpoint_async(EndpointName="upper", InferenceId="wake", InputLocation=_put(s3, "in/wake", b"wake up"))
    wait_for(lambda: "out/wake.out" in outputs(), 120, "the cold start's output")
    assert s3.get_object(Bucket="ray-async", Key="out/wake.out")["Body"].read() == b"WAKE UP"


def _put(s3: Any, key: str, body: bytes) -> str:
    s3.put_object(Bucket="ray-async", Key=key, Body=body)
    return f"s3://ray-async/{key}"


def test_two_front_doors_on_one_cluster_and_database(env: Cluster, tmp_path: Path) -> None:
    """Issue 16: a second front door on the same PostgreSQL and Ray cluster follows — it answers through
    the leader's Serve application, looked up by name; kill -9 the leader and it leads within 10 s,
    restores the endpoint and keeps answering. (Last in the module: the module's server comes back
    as the leader at the end.)"""
    from tests.integration.test_front_doors import TAKEOVER, leads, wait_leader

    follower = Server(tmp_path / "door-2", env=ray_env(env.ray, env.pg_url, env.s3_url)).start()
    try:
        assert leads(env.server) and not leads(follower)
        sm, rt = env.server.clients()
        create(
            sm, "doors", [sklearn_variant("doors")], {"doors": {"Image": SKLEARN_IMAGE, "ModelDataUrl": SKLEARN_URL}}
        )
        assert wait_status(sm, "doors", ("InService", "Failed"), timeout=180)["EndpointStatus"] == "InService"
        time.sleep(1.5)  # published every 0.5 s
        x, _ = diabetes()
        row = csv_row(x[0])
        want = rt.invoke_endpoint(EndpointName="doors", ContentType="text/csv", Body=row)["Body"].read()
        _, rt_f = follower.clients()
        for _ in range(5):
            assert rt_f.invoke_endpoint(EndpointName="doors", ContentType="text/csv", Body=row)["Body"].read() == want
        env.server.kill9()
        assert wait_leader(follower, TAKEOVER) < TAKEOVER
        deadline = time.monotonic() + 180
        while True:
            try:
                got = rt_f.invoke_endpoint(EndpointName="doors", ContentType="text/csv", Body=row)["Body"].read()
                break
            except ClientError:
                assert time.monotonic() < deadline, follower.log_path.read_text()[-3000:]
                time.sleep(0.5)
        assert got == want
    finally:
        follower.stop()
        env.server.start()
