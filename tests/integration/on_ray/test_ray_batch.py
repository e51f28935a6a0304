"""Batch transform on Ray Data and serverless endpoints on Ray Serve (issue 16), against a real local
Ray cluster (a head and a second node joined with ``ray start --address``) and moto's S3: the same
jobs on a Ray-backend and a local-backend server write byte-identical outputs; a job survives the
kill -9 of a model actor mid-job; Stop removes what a job wrote; a serverless endpoint scales to zero
replicas when idle and holds requests through its cold start."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from modelhost.jobs.splitters import recordio_frame
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
from tests.integration.on_ray.test_ray_backend import AWS_ENV, replica_pids, wait_for
from tests.integration.test_batch import CSV_IN, CSV_OUT, ECHO_CODE, job
from tests.raycluster import RayCluster

pytestmark = pytest.mark.slow

SLOW_UPPER = """
import time
def model_fn(model_dir):
    return None
def transform_fn(model, data, content_type, accept):
    time.sleep(0.03)
    return data.upper(), "text/plain"
"""
BUCKET = "ray-batch"


class Env:
    def __init__(self, ray: RayCluster, s3_url: str, ray_server: Server, local: Server) -> None:
        self.ray, self.s3_url, self.server, self.local = ray, s3_url, ray_server, local
        self.s3 = moto_s3(s3_url)

    def put(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return f"s3://{BUCKET}/{key}"

    def outputs(self, prefix: str) -> dict[str, bytes]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
        return {
            o["Key"][len(prefix) + 1 :]: self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed
        }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, cluster: RayCluster) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("raybatch")
    ray = cluster
    with moto_server(tmp / "moto.log") as s3_url:
        s3 = moto_s3(s3_url)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="models/skl.tar.gz", Body=sklearn_model()[0])
        s3.put_object(Bucket=BUCKET, Key="models/echo.tar.gz", Body=tarball({"code/inference.py": ECHO_CODE}))
        s3.put_object(Bucket=BUCKET, Key="models/slow.tar.gz", Body=tarball({"code/inference.py": SLOW_UPPER}))
        ray_env = {
            **ray.env,
            **AWS_ENV,
            "MODELHOST_BACKEND": "ray",
            "MODELHOST_S3_ENDPOINT_URL": s3_url,
            "MODELHOST_RAY_CPUS_PER_VCPU": "0.1",  # a 2+1-CPU test cluster holds several ml.m5.large actors
            "MODELHOST_RAY_MEMORY_SHARE": "0",
            "MODELHOST_PING_INTERVAL": "1",
            "MODELHOST_SERVERLESS_IDLE_SECONDS": "4",
        }
        ray_server = Server(tmp / "ray-data", env=ray_env).start()
        local = Server(tmp / "local-data", env={**AWS_ENV, "MODELHOST_S3_ENDPOINT_URL": s3_url}).start()
        try:
            for srv in (ray_server, local):
                sm, _ = srv.clients()
                for name, image in (("skl", SKLEARN_IMAGE), ("echo", PYTHON_IMAGE), ("slow", PYTHON_IMAGE)):
                    container = {"Image": image, "ModelDataUrl": f"s3://{BUCKET}/models/{name}.tar.gz"}
                    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
            yield Env(ray, s3_url, ray_server, local)
        finally:
            ray_server.stop()
            local.stop()


def actor_pids() -> list[int]:
    """Ray Data's model actors (their title is ``ray::MapWorker(MapBatches(TransformActor))...``)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::") and "TransformActor" in cmd[0]:
            pids.append(proc.pid)
    return pids


def prefix_uri(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def make_inputs(env: Env) -> dict[str, dict[str, Any]]:
    """Jobs over the same inputs: SplitType Line, RecordIO and None (TFRecord shares RecordIO's path
    here), both strategies, both assemble modes, gzip, a manifest, payload limits, filters and joins
    (CSV and JSON), and a failing object."""
    x, _ = diabetes()
    rows = [csv_row(r) for r in x[:150]]
    env.put("in/csv/a.csv", ("\n".join(rows[:100]) + "\n").encode())
    env.put("in/csv/sub/b.csv", ("\r\n".join(rows[100:]) + "\r\n").encode())
    env.put("in/ids/d.csv.gz", gzip.compress("".join(f"id-{i},{r}\n" for i, r in enumerate(rows[:40])).encode()))
    env.put("in/ids/manifest.json", json.dumps([{"prefix": prefix_uri("in/ids/")}, "d.csv.gz"]).encode())
    features = [{"id": i, "features": [[float(v) for v in r.split(",")]]} for i, r in enumerate(rows[:25])]
    env.put("in/json/d.jsonl", "".join(json.dumps(f) + "\n" for f in features).encode())
    env.put("in/rio/r.rec", b"".join(recordio_frame(f"record {i} ".encode() * (i % 7 + 1)) for i in range(300)))
    env.put("in/bad/ok.txt", b"fine\nalso fine\n")
    env.put("in/bad/zz.txt", b"fine\nFAIL here\n")
    return {
        # Line, MultiRecord within 1 MB, two instances x two calls, CRLF lines, a nested key
        "csv-multi": {
            "model": "skl",
            "uri": "in/csv/",
            "tin": CSV_IN,
            "tout": CSV_OUT,
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": 1,
            "instances": 2,
            "MaxConcurrentTransforms": 2,
        },
        # a manifest of a gzipped object; SingleRecord with InputFilter, JoinSource=Input, OutputFilter on CSV
        "csv-join": {
            "model": "skl",
            "uri": "in/ids/manifest.json",
            "data_type": "ManifestFile",
            "tin": {**CSV_IN, "CompressionType": "Gzip"},
            "tout": CSV_OUT,
            "BatchStrategy": "SingleRecord",
            "DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
        },
        # JSON Lines joined and filtered as JSON
        "json-join": {
            "model": "skl",
            "uri": "in/json/",
            "tin": {"ContentType": "application/json", "SplitType": "Line"},
            "tout": {"Accept": "application/json", "AssembleWith": "Line"},
            "BatchStrategy": "SingleRecord",
            "DataProcessing": {
                "InputFilter": "$.features",
                "JoinSource": "Input",
                "OutputFilter": "$['id','SageMakerOutput']",
            },
        },
        "recordio": {
            "model": "echo",
            "uri": "in/rio/",
            "tin": {"ContentType": "application/x-recordio", "SplitType": "RecordIO"},
            "tout": {"AssembleWith": "Line"},
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": 1,
        },
        # SplitType None (each object one request); one object fails after its retry
        "failing": {
            "model": "echo",
            "uri": "in/bad/",
            "tin": {"ContentType": "text/plain"},
            "tout": {},
            "ModelClientConfig": {"InvocationsMaxRetries": 1},
        },
    }


@pytest.mark.timeout(600)  # with the module's cluster start: five Ray Data pipelines start at once on 2 cores
def test_batch_transform_on_ray_data_is_byte_identical_to_local(env: Env) -> None:
    cases = make_inputs(env)
    descs: dict[str, dict[str, dict[str, Any]]] = {"ray": {}, "local": {}}
    for side, srv in (("ray", env.server), ("local", env.local)):
        sm, _ = srv.clients()
        for name, case in cases.items():
            kw = dict(case)
            model, uri = kw.pop("model"), prefix_uri(kw.pop("uri"))
            job(sm, name, model, uri, prefix_uri(f"out-{side}/{name}"), wait=False, **kw)
    for side, srv in (("ray", env.server), ("local", env.local)):
        sm, _ = srv.clients()
        for name in cases:
            descs[side][name] = job_result(sm, name)
    for name in cases:
        ray_desc, local_desc = descs["ray"][name], descs["local"][name]
        assert ray_desc["TransformJobStatus"] == local_desc["TransformJobStatus"], (name, ray_desc.get("FailureReason"))
        # the same reason (a model's 500 ends with its traceback, whose server-side frames differ)
        assert first_line(ray_desc.get("FailureReason")) == first_line(local_desc.get("FailureReason")), name
        ray_out, local_out = env.outputs(f"out-ray/{name}"), env.outputs(f"out-local/{name}")
        assert ray_out == local_out, name
        progress = ray_desc["ModelhostProgress"], local_desc["ModelhostProgress"]
        keys = ("ObjectsTotal", "ObjectsCompleted", "ObjectsFailed", "RecordsProcessed")
        assert [progress[0][k] for k in keys] == [progress[1][k] for k in keys], (name, progress)
    statuses = {n: d["TransformJobStatus"] for n, d in descs["ray"].items()}
    assert statuses == {**{n: "Completed" for n in cases}, "failing": "Failed"}
    assert "s3://ray-batch/in/bad/zz.txt" in descs["ray"]["failing"]["FailureReason"]
    assert "the model cannot transform FAIL records" in descs["ray"]["failing"]["FailureReason"]
    assert set(env.outputs("out-ray/failing")) == {"ok.txt.out"}
    assert len(env.outputs("out-ray/csv-multi")["a.csv.out"].splitlines()) == 100
    log = (env.server.data_dir / "logs" / "transform-jobs" / "csv-multi.log").read_text()
    assert "running on Ray Data: 2 actor(s)" in log and "(Ray Data)" in log


def first_line(text: str | None) -> str | None:
    return text.splitlines()[0] if text else text


def job_result(sm: Any, name: str, timeout: float = 240) -> dict[str, Any]:
    from modelhost.jobs.progress import describe_with_progress

    deadline = time.monotonic() + timeout
    while True:
        desc, progress = describe_with_progress(sm, name)
        if desc["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            desc["ModelhostProgress"] = progress
            return desc
        if time.monotonic() > deadline:
            raise AssertionError(f"transform job {name} still {desc['TransformJobStatus']}")
        time.sleep(0.5)


def slow_inputs(env: Env, prefix: str, objects: int, records: int) -> dict[str, bytes]:
    expected = {}
    for k in range(objects):
        lines = [f"object {k} record {i}" for i in range(records)]
        env.put(f"{prefix}/part-{k}.txt", ("\n".join(lines) + "\n").encode())
        expected[f"part-{k}.txt.out"] = ("\n".join(line.upper() for line in lines) + "\n").encode()
    return expected


def test_job_survives_the_loss_of_a_model_actor(env: Env) -> None:
    """kill -9 of one of the job's (two) actors mid-job: Ray restarts it and retries its calls; every
    record is answered exactly once, in order."""
    expected = slow_inputs(env, "in/slow", objects=4, records=100)
    sm, _ = env.server.clients()
    wait_for(lambda: not actor_pids(), 60, "the earlier jobs' actors to go")  # so the two found below are this job's
    job(
        sm,
        "survivor",
        "slow",
        prefix_uri("in/slow/"),
        prefix_uri("out-ray/survivor"),
        wait=False,
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
        MaxConcurrentTransforms=2,
        instances=2,
    )
    from modelhost.jobs.progress import describe_with_progress

    wait_for(lambda: describe_with_progress(sm, "survivor")[1].get("RecordsProcessed", 0) >= 60, 120, "progress")
    pids = actor_pids()  # this job's only (the earlier ones' are gone); the second may not have started yet
    assert 1 <= len(pids) <= 2, pids
    psutil.Process(pids[0]).kill()
    desc = job_result(sm, "survivor")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ModelhostProgress"]["RecordsProcessed"] == 400
    assert env.outputs("out-ray/survivor") == expected
    wait_for(lambda: not actor_pids(), 60, "the job's actors to go")


def test_stop_on_ray_removes_the_output(env: Env) -> None:
    """StopTransformJob mid-job: the pipeline ends, the object already written is removed, Stopped."""
    env.put("in/stop/a.txt", b"".join(b"quick %d\n" % i for i in range(5)))
    for k in (1, 2):
        env.put(f"in/stop/slow-{k}.txt", b"".join(b"SLOW %d\n" % i for i in range(40)))
    sm, _ = env.server.clients()
    job(
        sm,
        "stopped",
        "echo",
        prefix_uri("in/stop/"),
        prefix_uri("out-ray/stopped"),
        wait=False,
        tin={"ContentType": "text/plain", "SplitType": "Line"},
        tout={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
        MaxConcurrentTransforms=1,
    )
    wait_for(lambda: "a.txt.out" in env.outputs("out-ray/stopped"), 120, "the first object's output")
    sm.stop_transform_job(TransformJobName="stopped")
    desc = job_result(sm, "stopped")
    assert desc["TransformJobStatus"] == "Stopped"
    assert env.outputs("out-ray/stopped") == {}
    wait_for(lambda: not actor_pids(), 60, "the job's actors to go")


def test_serverless_endpoint_scales_to_zero_and_cold_starts(env: Env) -> None:
    """ServerlessConfig on Ray Serve: no replica until a request; requests during the cold start are
    held (not refused); idle for MODELHOST_SERVERLESS_IDLE_SECONDS: back to zero replicas."""
    sm, rt = env.server.clients()
    sm.create_endpoint_config(
        EndpointConfigName="sls",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "skl",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 4},
            }
        ],
    )
    sm.create_endpoint(EndpointName="sls", EndpointConfigName="sls")
    assert wait_status(sm, "sls", ("InService", "Failed"), timeout=180)["EndpointStatus"] == "InService"
    assert replica_pids("-sls--AllTraffic-") == []
    x, _ = diabetes()
    body = csv_row(x[0]).encode()
    answers: list[bytes] = []
    errors: list[str] = []

    def call() -> None:
        try:
            _, client = env.server.clients()
            answers.append(client.invoke_endpoint(EndpointName="sls", ContentType="text/csv", Body=body)["Body"].read())
        except Exception as exc:  # noqa: BLE001 - any refusal is the failure this test looks for
            errors.append(repr(exc))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(answers) == 3 and len(set(answers)) == 1, (errors, answers)
    assert len(replica_pids("-sls--AllTraffic-")) >= 1
    wait_for(lambda: not replica_pids("-sls--AllTraffic-"), 90, "scale to zero after the idle time")
    again = rt.invoke_endpoint(EndpointName="sls", ContentType="text/csv", Body=body)["Body"].read()
    assert again == answers[0]
    sm.delete_endpoint(EndpointName="sls")
    wait_for(lambda: not replica_pids("-sls--AllTraffic-"), 60, "the Serve application to go")
