"""Server restarts: desired state lives in the data dir, so a new server on the same data dir brings every
endpoint back (graceful stop, kill -9, and endpoints caught half-way through Creating / Deleting).

Each test runs its own server lifecycle; servers are stopped by their own PID in ``finally``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from tests.helpers import (
    PYTHON_IMAGE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    deploy,
    diabetes,
    sklearn_model,
    tarball,
    wait_status,
)


def worker_pids(server: Server) -> dict[int, str]:
    """pid -> endpoint name of every live instance process of ``server``."""
    assert server.proc is not None
    out = {}
    for child in psutil.Process(server.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "modelhost.serving.worker" in " ".join(child.cmdline()):
                out[child.pid] = child.environ().get("SAGEMAKER_ENDPOINT_NAME", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: set[int], timeout: float) -> float:
    """Seconds until none of ``pids`` runs any more (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"instance processes still running after {timeout:g}s: {[p for p in pids if alive(p)]}"
            )
        time.sleep(0.05)
    return time.monotonic() - started


def invoke_eventually(rt: Any, name: str, timeout: float = 30, **kwargs: Any) -> Any:
    """InvokeEndpoint, retrying while the restarted server brings instances up (ServiceUnavailable)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = rt.invoke_endpoint(EndpointName=name, **kwargs)
            return json.loads(resp["Body"].read())
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ServiceUnavailable", exc
            assert time.monotonic() < deadline, f"{name} did not answer within {timeout:g}s of the restart"
            time.sleep(0.2)


def counts(sm: Any, name: str) -> list[int]:
    return [v["CurrentInstanceCount"] for v in sm.describe_endpoint(EndpointName=name)["ProductionVariants"]]


def wait_counts(sm: Any, name: str, expected: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := counts(sm, name)) != expected:
        assert time.monotonic() < deadline, f"{name}: CurrentInstanceCount {got}, expected {expected}"
        time.sleep(0.2)


def is_gone(sm: Any, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ValidationException"
        assert "Could not find endpoint" in exc.response["Error"]["Message"]
        return True
    return False


SLOW_MODEL = """
import json
import os
import time


def model_fn(model_dir):
    time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))
    return os.getpid()


def input_fn(body, content_type):
    return body.decode("utf-8") if isinstance(body, bytes) else body


def predict_fn(data, model):
    if data == "slow":
        time.sleep(60)
    return {"echo": data, "pid": model}


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture()
def sk(tmp_path: Path) -> tuple[bytes, Any, list[str], list[float]]:
    data, model = sklearn_model()
    x, _ = diabetes()
    rows = [csv_row(r) for r in x[:3]]
    expected = [float(model.predict([[float(v) for v in r.split(",")]])[0]) for r in rows]
    return data, model, rows, expected


def test_graceful_restart_brings_endpoints_back(tmp_path: Path, sk: Any) -> None:
    data, _model, rows, expected = sk
    data_dir = tmp_path / "data"
    first = Server(data_dir)
    second: Server | None = None
    try:
        first.start()
        first.put_object("s3://models/restart/sk.tar.gz", data)
        sm, rt = first.clients()
        container = {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/restart/sk.tar.gz"}
        assert deploy(sm, "restart-a", container, instances=2)["EndpointStatus"] == "InService"
        assert deploy(sm, "restart-b", container, instances=1)["EndpointStatus"] == "InService"
        arn_a = sm.describe_endpoint(EndpointName="restart-a")["EndpointArn"]
        sm.add_tags(ResourceArn=arn_a, Tags=[{"Key": "team", "Value": "faults"}])
        model_arn = sm.describe_model(ModelName="restart-b")["ModelArn"]
        sm.add_tags(ResourceArn=model_arn, Tags=[{"Key": "stage", "Value": "prod"}])
        before = {n: sm.describe_endpoint(EndpointName=n) for n in ("restart-a", "restart-b")}
        for name in before:
            got = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=rows[0])["Body"].read())
            assert abs(got[0] - expected[0]) < 1e-9
        # "restart-c" is still loading (Creating) when the server is stopped.
        first.put_object("s3://models/restart/slow.tar.gz", tarball({"code/inference.py": SLOW_MODEL}))
        slow = {
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": "s3://models/restart/slow.tar.gz",
            "Environment": {"LOAD_SECONDS": "3"},
        }
        deploy(sm, "restart-c", slow, wait=False)
        deadline = time.monotonic() + 10
        while len(pids := worker_pids(first)) < 4:
            assert time.monotonic() < deadline, pids
            time.sleep(0.05)
        assert sorted(pids.values()) == ["restart-a", "restart-a", "restart-b", "restart-c"]
        assert sm.describe_endpoint(EndpointName="restart-c")["EndpointStatus"] == "Creating"

        first.stop()
        assert first.proc is not None and first.proc.returncode in (0, -15)  # uvicorn re-raises SIGTERM
        # A graceful stop stops (and reaps) every instance before the server exits, loading ones included.
        assert not [p for p in pids if alive(p)]
        assert first.logs("restart-a").count("instance stopped") == 2
        assert first.logs("restart-c").count("instance stopped") == 1

        second = Server(data_dir).start()
        sm, rt = second.clients()
        # Still InService, never re-created: same ARN and CreationTime, no Creating phase.
        for name, old in before.items():
            desc = sm.describe_endpoint(EndpointName=name)
            assert desc["EndpointStatus"] == "InService"
            assert desc["EndpointArn"] == old["EndpointArn"]
            assert desc["CreationTime"] == old["CreationTime"]
            assert desc["EndpointConfigName"] == name
        for name in before:
            for i, row in enumerate(rows):
                got = invoke_eventually(rt, name, ContentType="text/csv", Body=row)
                assert abs(got[0] - expected[i]) < 1e-9
        wait_counts(sm, "restart-a", [2])
        wait_counts(sm, "restart-b", [1])
        desc = wait_status(sm, "restart-c", ("InService", "Failed"), timeout=30)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        assert invoke_eventually(rt, "restart-c", ContentType="text/plain", Body="c")["echo"] == "c"
        new_pids = worker_pids(second)
        assert sorted(new_pids.values()) == ["restart-a", "restart-a", "restart-b", "restart-c"]
        assert not set(new_pids) & set(pids)
        assert sm.describe_endpoint(EndpointName="restart-a")["EndpointStatus"] == "InService"

        assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"restart-a", "restart-b", "restart-c"}
        assert {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]} == {
            "restart-a",
            "restart-b",
            "restart-c",
        }
        assert {e["EndpointName"]: e["EndpointStatus"] for e in sm.list_endpoints()["Endpoints"]} == {
            "restart-a": "InService",
            "restart-b": "InService",
            "restart-c": "InService",
        }
        assert sm.list_tags(ResourceArn=arn_a)["Tags"] == [{"Key": "team", "Value": "faults"}]
        assert sm.list_tags(ResourceArn=model_arn)["Tags"] == [{"Key": "stage", "Value": "prod"}]
        # The endpoint log goes on in the same file.
        log = second.logs("restart-a")
        assert log.count("deploying endpoint config restart-a (Creating)") == 1
        assert "deploying endpoint config restart-a (InService)" in log
        second.stop()
        assert second.proc is not None and second.proc.returncode in (0, -15)
        assert not [p for p in new_pids if alive(p)]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_kill9_of_the_server(tmp_path: Path, sk: Any) -> None:
    data, _model, rows, expected = sk
    data_dir = tmp_path / "data"
    first = Server(data_dir)
    second: Server | None = None
    try:
        first.start()
        first.put_object("s3://models/restart/sk.tar.gz", data)
        sm, rt = first.clients()
        container = {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/restart/sk.tar.gz"}
        assert deploy(sm, "orphans", container, instances=2)["EndpointStatus"] == "InService"
        json.loads(rt.invoke_endpoint(EndpointName="orphans", ContentType="text/csv", Body=rows[0])["Body"].read())
        pids = set(worker_pids(first))
        assert len(pids) == 2

        first.kill9()
        # The instances watch their parent and exit on their own.
        assert wait_gone(pids, timeout=5) < 5

        second = Server(data_dir).start()
        sm, rt = second.clients()
        assert sm.describe_endpoint(EndpointName="orphans")["EndpointStatus"] == "InService"
        got = invoke_eventually(rt, "orphans", ContentType="text/csv", Body=rows[1])
        assert abs(got[0] - expected[1]) < 1e-9
        wait_counts(sm, "orphans", [2])
        assert len(worker_pids(second)) == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_endpoints_caught_creating_or_deleting_by_a_kill9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir)
    second: Server | None = None
    stuck: list[Any] = []
    try:
        first.start()
        first.put_object("s3://models/restart/slow.tar.gz", tarball({"code/inference.py": SLOW_MODEL}))
        sm, rt = first.clients(read_timeout=120)

        # "draining": InService, then deleted while a request is in flight, so it stays Deleting (draining).
        uri = "s3://models/restart/slow.tar.gz"
        assert deploy(sm, "draining", {"Image": PYTHON_IMAGE, "ModelDataUrl": uri})["EndpointStatus"] == "InService"

        def slow_request() -> None:
            try:
                rt.invoke_endpoint(EndpointName="draining", ContentType="text/plain", Body="slow")
            except Exception as exc:  # the server is killed under it
                stuck.append(exc)

        t = threading.Thread(target=slow_request, daemon=True)
        t.start()
        time.sleep(0.5)
        sm.delete_endpoint(EndpointName="draining")

        # "loading": its model_fn takes 5 s, so it is still Creating when the server dies.
        deploy(
            sm,
            "loading",
            {"Image": PYTHON_IMAGE, "ModelDataUrl": uri, "Environment": {"LOAD_SECONDS": "5"}},
            wait=False,
        )
        time.sleep(1.0)
        assert sm.describe_endpoint(EndpointName="draining")["EndpointStatus"] == "Deleting"
        assert sm.describe_endpoint(EndpointName="loading")["EndpointStatus"] == "Creating"
        pids = set(worker_pids(first))
        assert len(pids) == 2  # the draining instance and the loading one
        first.kill9()
        assert wait_gone(pids, timeout=5) < 5
        t.join(10)
        assert stuck, "the in-flight request should have failed with the server"

        second = Server(data_dir).start()
        sm, rt = second.clients()
        desc = wait_status(sm, "loading", ("InService", "Failed"), timeout=30)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        deadline = time.monotonic() + 15
        while not is_gone(sm, "draining"):
            assert time.monotonic() < deadline, "the endpoint caught Deleting was not deleted after the restart"
            time.sleep(0.2)
        assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["loading"]
        body = invoke_eventually(rt, "loading", ContentType="text/plain", Body="hi")
        assert body["echo"] == "hi"
        assert set(worker_pids(second)) == {body["pid"]}
        # The models and configs of both are untouched (DeleteEndpoint deletes neither).
        assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"draining", "loading"}
        assert "endpoint deleted" in second.logs("draining")
    finally:
        first.stop()
        if second is not None:
            second.stop()
