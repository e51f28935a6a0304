"""Serverless endpoints against a real server with boto3: scale to zero, cold starts held and shared,
MaxConcurrency throttling, ProvisionedConcurrency, the memory limit, updates under load, restarts."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
import psutil
import pytest

from tests.helpers import PYTHON_IMAGE, ROLE, SKLEARN_IMAGE, Server, csv_row, diabetes, sklearn_model, tarball

IDLE = 3  # MODELHOST_SERVERLESS_IDLE_SECONDS for this module

# A model that sleeps or allocates on request, and says which process answered.
TOY_CODE = """
import json, os, time

def model_fn(model_dir):
    return "toy"

def transform_fn(model, data, content_type, accept):
    req = json.loads(data or b"{}")
    if req.get("sleep"):
        time.sleep(req["sleep"])
    if req.get("alloc_mb"):
        blob = b"x" * (req["alloc_mb"] * 1024 * 1024)
        time.sleep(2)
        del blob
    return json.dumps({"pid": os.getpid()}), "application/json"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("sl") / "data",
        env={"MODELHOST_SERVERLESS_IDLE_SECONDS": str(IDLE), "MODELHOST_RECONCILE_INTERVAL": "0.5"},
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def models(server: Server, sm: Any) -> dict[str, Any]:
    data, fitted = sklearn_model()
    server.put_object("s3://models/sl/sk.tar.gz", data)
    server.put_object("s3://models/sl/toy.tar.gz", tarball({"code/inference.py": TOY_CODE}))
    sm.create_model(
        ModelName="sl-sk",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/sl/sk.tar.gz"},
    )
    sm.create_model(
        ModelName="sl-toy",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/sl/toy.tar.gz"},
    )
    return {"sk": fitted}


def serverless(sm: Any, name: str, model: str, **config: Any) -> None:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2, **config},
            }
        ],
    )


def create(sm: Any, name: str, model: str, **config: Any) -> dict:
    serverless(sm, name, model, **config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return sm.describe_endpoint(EndpointName=name)


def instance_pids(server: Server) -> set[int]:
    """Instance processes of the server: its children and the children of its template processes."""
    assert server.proc is not None
    pids = set()
    for child in psutil.Process(server.proc.pid).children():
        cmd = " ".join(child.cmdline())
        if "modelhost.backends.local.forkserver" in cmd:
            pids.update(p.pid for p in child.children())
        elif "modelhost.serving.worker" in cmd:
            pids.add(child.pid)
    return pids


def endpoint_pids(server: Server, name: str) -> set[int]:
    return logged_pids(server, server.logs(name))


def logged_pids(server: Server, log: str) -> set[int]:
    """Running instances whose start a log records (a forked instance's /proc environ and command line
    are its template's, so the log is what names the endpoint)."""
    started = {int(m) for m in re.findall(r"instance started \(pid (\d+)\)", log)}
    alive = set()
    for pid in started & instance_pids(server):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
    return alive


def invoke_toy(rt: Any, name: str, **req: Any) -> dict:
    resp = rt.invoke_endpoint(EndpointName=name, Body=json.dumps(req), ContentType="application/json")
    return json.loads(resp["Body"].read())


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_scale_to_zero_and_back(server: Server, sm: Any, rt: Any, models: dict[str, Any]) -> None:
    desc = create(sm, "sl-zero", "sl-sk")
    variant = desc["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert variant["DesiredServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert endpoint_pids(server, "sl-zero") == set(), "a serverless endpoint starts cold"
    x, _ = diabetes()
    expected = models["sk"].predict(x[:1])[0]
    body = rt.invoke_endpoint(EndpointName="sl-zero", Body=csv_row(x[0]), ContentType="text/csv")["Body"].read()
    assert abs(float(body.decode().strip().strip("[]")) - expected) < 0.01
    assert len(endpoint_pids(server, "sl-zero")) == 1
    wait_until(lambda: not endpoint_pids(server, "sl-zero"), IDLE + 10, "scale to zero")
    body = rt.invoke_endpoint(EndpointName="sl-zero", Body=csv_row(x[0]), ContentType="text/csv")["Body"].read()
    assert abs(float(body.decode().strip().strip("[]")) - expected) < 0.01
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    setup = [
        line
        for line in metrics.splitlines()
        if line.startswith("modelhost_model_setup_time_microseconds_count") and 'endpoint="sl-zero"' in line
    ]
    assert setup and float(setup[0].split()[-1]) == 2.0, setup
    assert "from the sklearn template" in server.logs("sl-zero")


def test_max_concurrency_throttles_exactly_the_excess(server: Server, sm: Any, rt: Any, models: dict) -> None:
    create(sm, "sl-busy", "sl-toy")

    def call(_i: int) -> str:
        try:
            invoke_toy(rt, "sl-busy", sleep=3)
            return "ok"
        except botocore.exceptions.ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            return exc.response["Error"]["Code"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert sorted(outcomes) == ["ThrottlingException"] * 6 + ["ok"] * 2, outcomes
    # The two admitted requests shared the cold start, then scaled out to MaxConcurrency.
    assert len(endpoint_pids(server, "sl-busy")) <= 2


def test_provisioned_concurrency_stays_warm(server: Server, sm: Any, rt: Any, models: dict) -> None:
    create(sm, "sl-warm", "sl-toy", ProvisionedConcurrency=1)
    pids = endpoint_pids(server, "sl-warm")
    assert len(pids) == 1, "ProvisionedConcurrency instances start with the endpoint"
    first = invoke_toy(rt, "sl-warm")["pid"]
    assert first in pids
    time.sleep(IDLE + 2)
    assert endpoint_pids(server, "sl-warm") == pids, "never scaled below ProvisionedConcurrency"
    assert invoke_toy(rt, "sl-warm")["pid"] == first


def test_memory_limit_exceeded_is_a_model_error(server: Server, sm: Any, rt: Any, models: dict) -> None:
    create(sm, "sl-mem", "sl-toy")
    first = invoke_toy(rt, "sl-mem")["pid"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        invoke_toy(rt, "sl-mem", alloc_mb=1400)
    err = info.value.response
    assert err["Error"]["Code"] == "ModelError"
    assert "memory limit exceeded" in err["Error"]["Message"]
    assert "MemorySizeInMB of 1024 MB" in err["Error"]["Message"]
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    assert invoke_toy(rt, "sl-mem")["pid"] != first  # a fresh instance
    assert "memory limit exceeded" in server.logs("sl-mem")


def test_payload_limit_is_4_mb(server: Server, sm: Any, rt: Any, models: dict) -> None:
    create(sm, "sl-big", "sl-toy")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        rt.invoke_endpoint(EndpointName="sl-big", Body=b"x" * (4 * 1024 * 1024 + 1), ContentType="application/json")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "4 MB" in info.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"MemorySizeInMB": 1500, "MaxConcurrency": 2}, "memorySizeInMB"),
        ({"MemorySizeInMB": 1024, "MaxConcurrency": 201}, "maxConcurrency"),
        ({"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3}, "ProvisionedConcurrency"),
    ],
)
def test_bad_serverless_configs(sm: Any, models: dict, config: dict, words: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName="sl-bad",
            ProductionVariants=[{"VariantName": "v", "ModelName": "sl-sk", "ServerlessConfig": config}],
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert words in info.value.response["Error"]["Message"]


def test_serverless_refuses_what_it_lacks(sm: Any, models: dict) -> None:
    variant = {"ModelName": "sl-sk", "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}
    cases = [
        ({"ProductionVariants": [{"VariantName": "a", **variant}, {"VariantName": "b", **variant}]}, "one production"),
        (
            {
                "ProductionVariants": [{"VariantName": "a", **variant}],
                "DataCaptureConfig": {
                    "InitialSamplingPercentage": 100,
                    "DestinationS3Uri": "s3://b/capture",
                    "CaptureOptions": [{"CaptureMode": "Input"}],
                },
            },
            "DataCaptureConfig",
        ),
    ]
    for extra, words in cases:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sm.create_endpoint_config(EndpointConfigName="sl-lacks", **extra)
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert words in info.value.response["Error"]["Message"]


def test_update_between_serverless_and_instances_under_load(server: Server, sm: Any, rt: Any, models: dict) -> None:
    x, _ = diabetes()
    sm.create_endpoint_config(
        EndpointConfigName="sl-upd-inst",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "sl-sk",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    serverless(sm, "sl-upd-sl", "sl-sk", MaxConcurrency=4)  # above the 3 clients: no throttling
    sm.create_endpoint(EndpointName="sl-upd", EndpointConfigName="sl-upd-inst")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="sl-upd", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    stop = threading.Event()
    results: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                rt.invoke_endpoint(EndpointName="sl-upd", Body=csv_row(x[0]), ContentType="text/csv")["Body"].read()
                results.append("ok")
            except Exception as exc:
                results.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for config in ("sl-upd-sl", "sl-upd-inst"):
            time.sleep(1)
            sm.update_endpoint(EndpointName="sl-upd", EndpointConfigName=config)
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName="sl-upd", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
            desc = sm.describe_endpoint(EndpointName="sl-upd")
            assert desc["EndpointConfigName"] == config
            assert ("CurrentServerlessConfig" in desc["ProductionVariants"][0]) == (config == "sl-upd-sl")
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r != "ok"]
    assert len(results) > 20 and not failures, failures[:5]


def test_restart_brings_serverless_back_cold(server: Server, sm: Any, rt: Any, models: dict) -> None:
    """Last in the module: restarts the server on the same data dir."""
    create(sm, "sl-restart", "sl-sk")
    x, _ = diabetes()
    rt.invoke_endpoint(EndpointName="sl-restart", Body=csv_row(x[0]), ContentType="text/csv")
    server.stop()
    server.start()
    sm2, rt2 = server.clients()
    sm2.get_waiter("endpoint_in_service").wait(EndpointName="sl-restart", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    time.sleep(1)
    assert endpoint_pids(server, "sl-restart") == set(), "back cold: nothing running until a request"
    body = rt2.invoke_endpoint(EndpointName="sl-restart", Body=csv_row(x[0]), ContentType="text/csv")["Body"].read()
    assert body
    assert len(endpoint_pids(server, "sl-restart")) == 1
