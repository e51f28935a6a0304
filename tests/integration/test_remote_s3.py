"""s3:// artifacts from a real S3-compatible service (moto's S3 server) instead of the embedded
bucket store, configured with MODELHOST_S3_ENDPOINT_URL."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("moto_server", path=str(Path(__import__("sys").executable).parent))
    if exe is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]'; it is in the test extra)")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("remote") / "data",
        env={"MODELHOST_S3_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_model_artifacts_from_a_real_s3_service(server: Server, moto_url: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="remote-models")
    data, model = sklearn_model()
    s3.put_object(Bucket="remote-models", Key="sk/model.tar.gz", Body=data)
    import io

    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    s3.put_object(Bucket="remote-models", Key="plain/model.joblib", Body=buf.getvalue())
    sm, rt = server.clients()
    desc = deploy(sm, "remote-tar", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://remote-models/sk/model.tar.gz"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    desc = deploy(
        sm,
        "remote-prefix",
        {
            "Image": SKLEARN_IMAGE,
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": "s3://remote-models/plain/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            },
        },
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    x, _ = diabetes()
    row = csv_row(x[0])
    expected = model.predict([[float(v) for v in row.split(",")]])[0]
    for name in ("remote-tar", "remote-prefix"):
        got = json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=row)["Body"].read())
        assert abs(got[0] - expected) < 1e-9
    # nothing was written to the embedded bucket store: the objects came from the service
    assert not (server.data_dir / "buckets" / "remote-models").exists()
    desc = deploy(sm, "remote-missing", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://remote-models/nope.tar.gz"})
    assert desc["EndpointStatus"] == "Failed"
    assert "s3://remote-models/nope.tar.gz" in desc["FailureReason"]
