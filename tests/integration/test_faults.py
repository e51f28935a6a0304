"""Fault tolerance of the hosting layer: instances killed, hung, crash-looping, or fed bad requests.

One real server for the module (each test uses its own endpoint), real boto3 clients, real worker processes
found through psutil and killed by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from tests.helpers import PYTHON_IMAGE, SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, sklearn_model, tarball

INSTANCE_WAIT = 3  # seconds a request waits for a healthy instance (MODELHOST_INSTANCE_WAIT_TIMEOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """As conftest's, with a short wait for a healthy instance so ServiceUnavailable comes quickly."""
    srv = Server(
        tmp_path_factory.mktemp("mh-faults") / "data",
        env={"MODELHOST_INSTANCE_WAIT_TIMEOUT": str(INSTANCE_WAIT)},
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sk_model(server: Server) -> Any:
    data, model = sklearn_model()
    server.put_object("s3://models/faults/sk.tar.gz", data)
    return model


# --- helpers


def worker_pids(server: Server, endpoint: str) -> set[int]:
    """PIDs of the live instance processes of ``endpoint`` (children of the server, by their environment)."""
    assert server.proc is not None
    pids = set()
    for child in psutil.Process(server.proc.pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "modelhost.serving.worker" not in " ".join(child.cmdline()):
                continue
            if child.environ().get("SAGEMAKER_ENDPOINT_NAME") == endpoint:
                pids.add(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def started_pids(server: Server, endpoint: str) -> list[tuple[str, int]]:
    """(instance, pid) of every ``instance started (pid N)`` line of the endpoint log, in order."""
    return [
        (m.group(1), int(m.group(2)))
        for m in re.finditer(r"\[([^\]]+)\] instance started \(pid (\d+)\)", server.logs(endpoint))
    ]


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def current_count(sm: Any, name: str) -> int:
    return int(sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"])


PYTHON_MODEL = """
import json
import os
import time


def model_fn(model_dir):
    marker = os.environ.get("MARKER_FILE")
    if marker and os.path.exists(marker):
        raise RuntimeError("marker file present: refusing to load")
    return {"pid": os.getpid()}


def input_fn(body, content_type):
    return body.decode("utf-8") if isinstance(body, bytes) else body


def predict_fn(data, model):
    if data.strip() == "hang":
        time.sleep(1000)
    return {"echo": data, "pid": model["pid"]}


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def python_model(server: Server, key: str) -> str:
    uri = f"s3://models/faults/{key}.tar.gz"
    server.put_object(uri, tarball({"code/inference.py": PYTHON_MODEL}))
    return uri


# --- tests


def test_kill9_of_one_instance_under_load(server: Server, sm: Any, sk_model: Any) -> None:
    name = "faults-kill9"
    desc = deploy(sm, name, {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/faults/sk.tar.gz"}, instances=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pids = wait_until(lambda: (p := worker_pids(server, name)) and len(p) == 2 and p, 10, "2 instance pids")
    assert {pid for _, pid in started_pids(server, name)} == pids

    x, _ = diabetes()
    rows = [csv_row(r) for r in x[:20]]
    expected = [float(sk_model.predict([[float(v) for v in row.split(",")]])[0]) for row in rows]

    threads_n = 4
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[float, float, str]] = []  # (start, end, "ok" | error code | exception type)
    wrong: list[str] = []
    statuses: list[str] = []

    # Clients are made before the load starts: building them in the threads takes seconds on a busy machine.
    runtimes = [server.clients(read_timeout=30)[1] for _ in range(threads_n)]

    def client_loop(seed: int) -> None:
        rt = runtimes[seed // 5]
        i = seed
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=rows[i % len(rows)])
                got = json.loads(resp["Body"].read())[0]
                outcome = "ok"
                if abs(got - expected[i % len(rows)]) > 1e-9:
                    with lock:
                        wrong.append(f"row {i % len(rows)}: {got} != {expected[i % len(rows)]}")
            except ClientError as exc:
                outcome = error_code(exc)
            except Exception as exc:  # a connection error: must not happen
                outcome = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes.append((started, time.monotonic(), outcome))

    def status_loop() -> None:
        sm2 = server.clients()[0]
        while not stop.is_set():
            statuses.append(sm2.describe_endpoint(EndpointName=name)["EndpointStatus"])
            time.sleep(0.1)

    workers = [threading.Thread(target=client_loop, args=(k * 5,)) for k in range(threads_n)]
    workers.append(threading.Thread(target=status_loop))
    for t in workers:
        t.start()
    victim = sorted(pids)[0]
    try:
        # Load is flowing (more than 10 answers) before the kill.
        wait_until(lambda: sum(o[2] == "ok" for o in list(outcomes)) > 10, 30, "answers before the kill")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(4.5)
    finally:
        stop.set()
        for t in workers:
            t.join(60)

    assert not wrong, wrong[:5]
    assert statuses and set(statuses) == {"InService"}, set(statuses)
    failures = [o for o in outcomes if o[2] != "ok"]
    # At most the requests in flight on the killed instance fail, and only as the service's own errors.
    assert len(failures) <= threads_n, failures
    assert all(o[2] in ("ModelError", "ServiceUnavailable") for o in failures), failures
    assert sum(o[2] == "ok" and o[0] < killed_at for o in outcomes) > 10
    after = [o for o in outcomes if o[0] > killed_at + 0.5]
    assert sum(o[2] == "ok" for o in after) > 10, after[:10]
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE

    # The killed instance is restarted: a new pid in the log, back to 2 healthy instances.
    wait_until(lambda: current_count(sm, name) == 2, 15, "CurrentInstanceCount back to 2")
    new_pids = worker_pids(server, name)
    assert len(new_pids) == 2 and victim not in new_pids and len(new_pids & pids) == 1
    started = started_pids(server, name)
    assert len(started) == 3 and started[-1][1] in new_pids - pids
    victim_instance = next(inst for inst, pid in started if pid == victim)
    assert started[-1][0] == victim_instance
    assert re.search(
        rf"\[{re.escape(victim_instance)}\] instance exited with code -9; restarting in", server.logs(name)
    )

    rt = server.clients()[1]
    for i in range(6):  # least-busy routing spreads these over both instances; all succeed
        got = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=rows[i])["Body"].read())
        assert abs(got[0] - expected[i]) < 1e-9
    sm.delete_endpoint(EndpointName=name)


def test_hung_instance_is_recycled(server: Server, sm: Any, rt: Any) -> None:
    name = "faults-hang"
    uri = python_model(server, "hang")
    desc = deploy(
        sm,
        name,
        {"Image": PYTHON_IMAGE, "ModelDataUrl": uri, "Environment": {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"}},
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    first = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="hello")["Body"].read())
    assert first["echo"] == "hello"
    (pid,) = worker_pids(server, name)
    assert first["pid"] == pid

    started = time.monotonic()
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="hang")
    elapsed = time.monotonic() - started
    assert error_code(info.value) == "ModelError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "timed out" in info.value.response["Error"]["Message"]
    assert 1.8 <= elapsed < 10, elapsed

    # Normal requests work again once the hung instance is replaced by a fresh process.
    deadline = time.monotonic() + 20
    while True:
        try:
            resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="again")
            body = json.loads(resp["Body"].read())
            break
        except ClientError as exc:
            assert error_code(exc) == "ServiceUnavailable", exc
            assert time.monotonic() < deadline, "the hung instance was not replaced within 20 s"
    assert body["echo"] == "again"
    assert body["pid"] != pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert worker_pids(server, name) == {body["pid"]}
    log = server.logs(name)
    assert "instance timed out on a request; restarting it" in log
    assert [p for _, p in started_pids(server, name)] == [pid, body["pid"]]
    sm.delete_endpoint(EndpointName=name)


def test_crash_loop_backs_off_and_recovers(server: Server, sm: Any, rt: Any, tmp_path: Path) -> None:
    name = "faults-crashloop"
    marker = tmp_path / "marker"
    uri = python_model(server, "crashloop")
    desc = deploy(sm, name, {"Image": PYTHON_IMAGE, "ModelDataUrl": uri, "Environment": {"MARKER_FILE": str(marker)}})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    (pid,) = worker_pids(server, name)
    assert json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="x")["Body"].read()) == {
        "echo": "x",
        "pid": pid,
    }

    marker.write_text("no more loads")
    os.kill(pid, signal.SIGKILL)

    def delays() -> list[float]:
        return [
            float(d) for d in re.findall(r"instance exited with code -?\d+; restarting in ([\d.]+)s", server.logs(name))
        ]

    # Every reload fails (model_fn raises), and each restart waits longer than the one before.
    wait_until(lambda: len(delays()) >= 3, 20, "three restart attempts in the endpoint log")
    got = delays()
    assert got[:3] == [0.5, 1.0, 2.0], got
    log = server.logs(name)
    assert "exited with code -9; restarting in 0.5s" in log
    assert "exited with code 3; restarting in 1s" in log
    assert log.count("restart failed: model_fn raised RuntimeError: marker file present") >= 2

    # The crash loop is visible in DescribeEndpoint.
    def variant_messages() -> list[str]:
        variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
        return [s.get("StatusMessage", "") for s in variant.get("VariantStatus", [])]

    wait_until(lambda: any("crash-looping" in m for m in variant_messages()), 30, "a crash-loop VariantStatus")
    assert any("marker file present" in m for m in variant_messages())

    # No healthy instance: the endpoint stays InService, requests get ServiceUnavailable after the wait.
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    started = time.monotonic()
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="x")
    assert error_code(info.value) == "ServiceUnavailable"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert INSTANCE_WAIT - 0.5 <= time.monotonic() - started < INSTANCE_WAIT + 5

    # The fault is fixed: the next restart loads and the instance serves again.
    marker.unlink()
    deadline = time.monotonic() + 20
    while True:
        try:
            body = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="y")["Body"].read())
            break
        except ClientError as exc:
            assert error_code(exc) == "ServiceUnavailable", exc
            assert time.monotonic() < deadline, "the instance did not come back within 20 s of the fix"
    assert body["echo"] == "y"
    assert worker_pids(server, name) == {body["pid"]}
    assert body["pid"] != pid
    wait_until(lambda: current_count(sm, name) == 1, 5, "CurrentInstanceCount back to 1")
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    assert variant_messages() == []
    sm.delete_endpoint(EndpointName=name)


def test_hung_idle_instance_is_replaced(server: Server, sm: Any, rt: Any) -> None:
    """An instance that is alive but stops answering /ping (SIGSTOP) is killed and restarted."""
    name = "faults-frozen"
    uri = python_model(server, "frozen")
    desc = deploy(sm, name, {"Image": PYTHON_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    (pid,) = worker_pids(server, name)
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: "consecutive pings; replacing it" in server.logs(name), 30, "the ping watchdog to act")
    wait_until(
        lambda: len(worker_pids(server, name)) == 1 and pid not in worker_pids(server, name),
        30,
        "a replacement instance",
    )
    body = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body="z")["Body"].read())
    assert body["echo"] == "z" and body["pid"] != pid
    sm.delete_endpoint(EndpointName=name)


def test_bad_requests_never_take_an_instance_down(server: Server, sm: Any, rt: Any, sk_model: Any) -> None:
    name = "faults-badreq"
    desc = deploy(sm, name, {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/faults/sk.tar.gz"}, instances=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pids = worker_pids(server, name)
    assert len(pids) == 2

    x, _ = diabetes()
    good = csv_row(x[3])
    huge = ",".join(["0.5"] * 400_000)  # 1.6 MB, one row of 400k features (the model takes 10)
    bad: list[tuple[str, str | bytes, dict[str, str], int, str]] = [
        ("text/csv", "1.0,2.0,abc", {}, 400, "could not convert 'abc' to a number"),
        ("text/csv", good + "\n1.0,2.0", {}, 400, "row 2 has 2 columns, expected 10"),
        ("text/csv", b"\xff\xfe\x00bad", {}, 400, "not valid UTF-8"),
        ("text/csv", "", {}, 400, "no data"),
        ("application/json", '{"instances": [[1, 2,', {}, 400, "Failed to decode application/json"),
        ("application/json", "[[1, 2], [3]]", {}, 400, "Failed to decode application/json"),
        ("text/csv", huge, {}, 500, "features"),
        ("application/x-image", b"\x89PNG\r\n", {}, 415, "Content type 'application/x-image' is not supported"),
        ("text/csv", good, {"Accept": "image/png"}, 406, "Accept type 'image/png' is not supported"),
    ]
    for content_type, body, extra, status, fragment in bad:
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body, **extra)
        err = info.value.response
        assert error_code(info.value) == "ModelError", (content_type, body[:40], err)
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert err["OriginalStatusCode"] == status, (content_type, body[:40], err)
        assert fragment in err["OriginalMessage"], (fragment, err["OriginalMessage"][:300])
        assert err["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{name}")

    # Over the 6 MB request limit: rejected by the platform before any instance sees it.
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"1" * (6 * 1024 * 1024 + 1))
    assert error_code(info.value) == "ValidationError"

    # Same processes, never restarted, still healthy and correct.
    assert worker_pids(server, name) == pids
    started = started_pids(server, name)
    assert len(started) == 2 and {p for _, p in started} == pids
    assert "restarting in" not in server.logs(name)
    assert current_count(sm, name) == 2
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=good)
    assert abs(json.loads(resp["Body"].read())[0] - sk_model.predict([[float(v) for v in good.split(",")]])[0]) < 1e-9
    sm.delete_endpoint(EndpointName=name)
