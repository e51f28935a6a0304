"""With a configured S3 service (moto's server), modelhost's own S3 API proxies to it: what clients put
through modelhost lands in the service, and what async inference writes there reads back through
modelhost."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.helpers import (
    ROLE,
    SKLEARN_IMAGE,
    Server,
    csv_row,
    diabetes,
    moto_s3,
    s3_backed_server,
    sklearn_model,
    wait_status,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[Server]:
    with s3_backed_server(tmp_path_factory.mktemp("proxy") / "data", moto_url) as srv:
        yield srv


def via_modelhost(server: Server) -> Any:
    """An S3 client of modelhost, with credentials of its own (not the server's)."""
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDCLIENT",
        aws_secret_access_key="client-secret",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def direct_keys(server: Server, bucket: str) -> list[str]:
    url = server.env["MODELHOST_S3_ENDPOINT_URL"]
    return [o["Key"] for o in moto_s3(url).list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_object_operations_land_in_the_service(server: Server, moto_url: str) -> None:
    s3, direct = via_modelhost(server), moto_s3(moto_url)
    s3.create_bucket(Bucket="proxied")
    assert "proxied" in [b["Name"] for b in direct.list_buckets()["Buckets"]]
    put = s3.put_object(
        Bucket="proxied", Key="dir/a b+ü.txt", Body=b"hello", ContentType="text/x-test", Metadata={"k": "v"}
    )
    got = direct.get_object(Bucket="proxied", Key="dir/a b+ü.txt")
    assert got["Body"].read() == b"hello" and got["ContentType"] == "text/x-test" and got["Metadata"] == {"k": "v"}
    assert got["ETag"] == put["ETag"]
    # ... and reads back through modelhost, ranges included
    back = s3.get_object(Bucket="proxied", Key="dir/a b+ü.txt")
    assert back["Body"].read() == b"hello" and back["Metadata"] == {"k": "v"}
    assert s3.get_object(Bucket="proxied", Key="dir/a b+ü.txt", Range="bytes=1-3")["Body"].read() == b"ell"
    head = s3.head_object(Bucket="proxied", Key="dir/a b+ü.txt")
    assert head["ContentLength"] == 5 and head["ETag"] == put["ETag"]
    s3.copy_object(Bucket="proxied", Key="copy.txt", CopySource={"Bucket": "proxied", "Key": "dir/a b+ü.txt"})
    assert direct.get_object(Bucket="proxied", Key="copy.txt")["Body"].read() == b"hello"
    listed = s3.list_objects_v2(Bucket="proxied", Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a b+ü.txt"]
    assert [p["Prefix"] for p in s3.list_objects_v2(Bucket="proxied", Delimiter="/")["CommonPrefixes"]] == ["dir/"]
    s3.delete_object(Bucket="proxied", Key="copy.txt")
    assert [o["Key"] for o in direct.list_objects_v2(Bucket="proxied")["Contents"]] == ["dir/a b+ü.txt"]


def test_missing_key_is_the_services_no_such_key(server: Server) -> None:
    s3 = via_modelhost(server)
    s3.create_bucket(Bucket="proxied-missing")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="proxied-missing", Key="nope")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="proxied-missing", Key="nope")
    assert info.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket="no-such-bucket-here")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"


def test_multipart_and_large_bodies_stream_through(server: Server, moto_url: str) -> None:
    s3, direct = via_modelhost(server), moto_s3(moto_url)
    s3.create_bucket(Bucket="proxied-big")
    data = os.urandom(11 * 1024 * 1024 + 17)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(data), "proxied-big", "big.bin", Config=config)
    head = direct.head_object(Bucket="proxied-big", Key="big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    out = io.BytesIO()
    s3.download_fileobj("proxied-big", "big.bin", out, Config=TransferConfig(multipart_threshold=64 * 1024 * 1024))
    assert out.getvalue() == data
    # the low-level calls too: list parts, abort
    upload = s3.create_multipart_upload(Bucket="proxied-big", Key="aborted.bin")["UploadId"]
    s3.upload_part(Bucket="proxied-big", Key="aborted.bin", UploadId=upload, PartNumber=1, Body=b"x" * 1024)
    parts = s3.list_parts(Bucket="proxied-big", Key="aborted.bin", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    s3.abort_multipart_upload(Bucket="proxied-big", Key="aborted.bin", UploadId=upload)
    assert "Contents" not in direct.list_objects_v2(Bucket="proxied-big", Prefix="aborted")


def test_aws_chunked_bodies_are_decoded(server: Server, moto_url: str) -> None:
    direct = moto_s3(moto_url)
    direct.create_bucket(Bucket="proxied-chunked")
    data = os.urandom(200_000)
    body = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32").read()
    request = urllib.request.Request(
        f"{server.url}/proxied-chunked/chunked.bin",
        data=body,
        method="PUT",
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "Content-Type": "application/x-chunked-test",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    got = direct.get_object(Bucket="proxied-chunked", Key="chunked.bin")
    assert got["Body"].read() == data and got["ContentType"] == "application/x-chunked-test"
    assert "aws-chunked" not in got.get("ContentEncoding", "")


def test_presigned_urls_of_modelhost_work(server: Server, moto_url: str) -> None:
    s3 = via_modelhost(server)
    s3.create_bucket(Bucket="proxied-presigned")
    s3.put_object(Bucket="proxied-presigned", Key="p.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "proxied-presigned", "Key": "p.txt"})
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.read() == b"presigned"


def test_async_inference_with_input_and_output_through_modelhost(server: Server) -> None:
    s3 = via_modelhost(server)
    for bucket in ("proxied-async-in", "proxied-async-out", "proxied-async-models"):
        s3.create_bucket(Bucket=bucket)
    data, model = sklearn_model()
    s3.put_object(Bucket="proxied-async-models", Key="sk/model.tar.gz", Body=data)
    x, _ = diabetes()
    rows = "\n".join(csv_row(v) for v in x[:3])
    s3.put_object(Bucket="proxied-async-in", Key="req/input.csv", Body=rows.encode())

    sm, rt = server.clients()
    name = "proxied-async"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://proxied-async-models/sk/model.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://proxied-async-out/results"}},
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc = wait_status(sm, name, ("InService", "Failed"))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation="s3://proxied-async-in/req/input.csv", ContentType="text/csv"
    )
    bucket, _, key = resp["OutputLocation"].removeprefix("s3://").partition("/")
    deadline = time.monotonic() + 60
    while True:
        try:
            got = s3.get_object(Bucket=bucket, Key=key)
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey", exc
        assert time.monotonic() < deadline, f"{resp['OutputLocation']} did not appear"
        time.sleep(0.2)
    expected = model.predict([[float(v) for v in line.split(",")] for line in rows.splitlines()])
    result = json.loads(got["Body"].read())
    assert len(result) == 3 and all(abs(a - b) < 1e-9 for a, b in zip(result, expected, strict=True))
    # `modelhost invoke --async`: the CLI uploads the body through modelhost and reads the result back
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDCLIENT", "AWS_SECRET_ACCESS_KEY": "client-secret"}
    proc = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", "invoke", name, "--async", "--content-type", "text/csv"]
        + ["--body", csv_row(x[0]), "--wait", "60", "--url", server.url],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert abs(json.loads(proc.stdout)[0] - expected[0]) < 1e-9
    assert direct_keys(server, "modelhost-async-inputs")
    # nothing went to the embedded bucket store
    embedded = ("proxied-async-in", "proxied-async-out", "modelhost-async-inputs")
    assert not any((server.data_dir / "buckets" / b).exists() for b in embedded)


def test_key_permissions_hold_through_the_proxy(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> None:
    """With a credentials file, a key's S3 permissions are checked before anything is forwarded."""
    root = tmp_path_factory.mktemp("proxy-auth")
    creds = root / "credentials"
    creds.write_text(
        "[admin]\naws_access_key_id = AKIDPROXYADMIN\naws_secret_access_key = admin-secret\n\n"
        "[reader]\naws_access_key_id = AKIDPROXYREADER\naws_secret_access_key = reader-secret\n"
        "permissions = s3:GetObject=arn:aws:s3:::proxy-perm/public/*, s3:ListBucket\n"
    )
    with s3_backed_server(root / "data", moto_url, credentials_file=creds) as srv:

        def s3(access: str, secret: str) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=srv.url,
                region_name="us-east-1",
                aws_access_key_id=access,
                aws_secret_access_key=secret,
                config=Config(retries={"mode": "standard", "max_attempts": 1}),
            )

        admin, reader = s3("AKIDPROXYADMIN", "admin-secret"), s3("AKIDPROXYREADER", "reader-secret")
        admin.create_bucket(Bucket="proxy-perm")
        admin.put_object(Bucket="proxy-perm", Key="public/a.txt", Body=b"open")
        admin.put_object(Bucket="proxy-perm", Key="private/b.txt", Body=b"secret")
        assert reader.get_object(Bucket="proxy-perm", Key="public/a.txt")["Body"].read() == b"open"
        for call in (
            lambda: reader.get_object(Bucket="proxy-perm", Key="private/b.txt"),
            lambda: reader.put_object(Bucket="proxy-perm", Key="public/c.txt", Body=b"x"),
            lambda: reader.delete_object(Bucket="proxy-perm", Key="public/a.txt"),
        ):
            with pytest.raises(ClientError) as exc:
                call()
            assert exc.value.response["Error"]["Code"] == "AccessDenied"
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            message = exc.value.response["Error"]["Message"]
            assert "user/reader is not authorized to perform: s3:" in message, message
        # nothing the denied calls asked for reached the service
        assert sorted(direct_keys(srv, "proxy-perm")) == ["private/b.txt", "public/a.txt"]
        with pytest.raises(ClientError) as exc:
            s3("AKIDPROXYREADER", "wrong").get_object(Bucket="proxy-perm", Key="public/a.txt")
        assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
