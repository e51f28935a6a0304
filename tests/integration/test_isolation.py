"""Isolation through the real server (issue 10): local model locations, requirements.txt options,
extraction caps, the instance quota, webhook targets, data-dir modes, and MODELHOST_INSTANCE_USER."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.helpers import PYTHON_IMAGE, ROLE, Server, deploy, tarball, wait_status

MIB = 1024 * 1024
BUCKET = "iso"
MAX_INSTANCES = 3
ALLOWED_RULE = "is outside the directories modelhost may read models from (MODELHOST_ALLOWED_MODEL_DIRS)."
INSTANCE_USER = "mh-test-instance"

WHOAMI = """
import json
import os
import pwd


def model_fn(model_dir):
    return model_dir


def input_fn(body, content_type):
    return body


def _try(fn):
    try:
        fn()
        return "allowed"
    except PermissionError:
        return "denied"


def predict_fn(data, model_dir):
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "home": os.environ.get("HOME"),
        "db": _try(lambda: open(os.environ["DB_PATH"], "rb").close()),
        "data_dir_listing": _try(lambda: os.listdir(os.environ["DATA_DIR"])),
        "model_files": sorted(os.listdir(model_dir)),
    }


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def s3_client(server: Server) -> Any:
    session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
    return session.client("s3", endpoint_url=server.url)


def put(server: Server, key: str, data: bytes) -> str:
    """Upload through the server's S3 API (so every file in the data dir is the server's own)."""
    s3_client(server).put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def zeros_tarball(size: int) -> bytes:
    out = io.BytesIO()
    chunk = bytes(MIB)
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                n = min(len(buffer), self.left, MIB)
                buffer[:n] = chunk[:n]
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), MIB))
    return out.getvalue()


def error_of(fn: Any, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        fn(**kwargs)
    resp = info.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("iso") / "data",
        env={
            "MODELHOST_ALLOWED_MODEL_DIRS": "",  # the default: the data dir only
            "MODELHOST_MAX_INSTANCES": str(MAX_INSTANCES),
            "MODELHOST_MAX_ARTIFACT_BYTES": str(64 * MIB),
            "MODELHOST_WEBHOOK_ALLOW": "",
        },
    ).start()
    s3_client(srv).create_bucket(Bucket=BUCKET)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sm(server: Server) -> Any:
    return server.clients()[0]


@pytest.fixture(scope="module")
def model_uri(server: Server) -> str:
    return put(server, "whoami/model.tar.gz", tarball({"code/inference.py": WHOAMI}))


# --- local model locations


def test_local_locations_outside_the_data_dir_are_refused(server: Server, sm: Any) -> None:
    data = server.data_dir
    links = data / "links"
    links.mkdir(mode=0o700)
    (links / "etc").symlink_to("/etc")
    escape = f"file://{data}/" + "../" * 30 + "etc"
    cases = [
        ({"ModelDataUrl": "file:///etc/"}, "ModelDataUrl file:///etc/"),
        ({"ModelDataUrl": "file:///root"}, "ModelDataUrl file:///root"),
        ({"ModelDataUrl": "/etc/shadow"}, "ModelDataUrl /etc/shadow"),
        ({"ModelDataUrl": escape}, f"ModelDataUrl {escape}"),
        ({"ModelDataUrl": f"file://{links}/etc/passwd"}, f"ModelDataUrl file://{links}/etc/passwd"),
        (
            {
                "ModelDataSource": {
                    "S3DataSource": {"S3Uri": "file:///etc/", "S3DataType": "S3Prefix", "CompressionType": "None"}
                }
            },
            "ModelDataSource.S3DataSource.S3Uri file:///etc/",
        ),
        ({"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "/etc"}}, "Environment.SAGEMAKER_SUBMIT_DIRECTORY /etc"),
    ]
    for i, (member, named) in enumerate(cases):
        status, code, message = error_of(
            sm.create_model,
            ModelName=f"loc-{i}",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": PYTHON_IMAGE, **member},
        )
        assert (status, code, message) == (400, "ValidationException", f"{named} {ALLOWED_RULE}")
    # Under the data dir is fine, and /opt/ml/model paths are the model itself.
    inside = data / "local-models"
    inside.mkdir(mode=0o700)
    sm.create_model(
        ModelName="loc-inside",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": PYTHON_IMAGE,
            "ModelDataUrl": f"file://{inside}",
            "Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
        },
    )
    sm.delete_model(ModelName="loc-inside")


def test_location_is_checked_again_when_materialised(server: Server, sm: Any) -> None:
    """A link that pointed inside when CreateModel checked it, and outside by deployment time."""
    base = server.data_dir / "swap"
    for d in (base, base / "real", base / "real" / "code"):  # the test's own files are private too
        d.mkdir(mode=0o700)
    (base / "real" / "code" / "inference.py").write_text(WHOAMI)
    os.chmod(base / "real" / "code" / "inference.py", 0o600)
    link = base / "current"
    link.symlink_to(base / "real")
    uri = f"file://{link}"
    sm.create_model(
        ModelName="swap", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": uri}
    )
    link.unlink()
    link.symlink_to("/etc")
    sm.create_endpoint_config(
        EndpointConfigName="swap",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "swap", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName="swap", EndpointConfigName="swap")
    desc = wait_status(sm, "swap", ("InService", "Failed"))
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"] == f"ModelDataUrl {uri} {ALLOWED_RULE}"
    sm.delete_endpoint(EndpointName="swap")


# --- requirements.txt


def test_requirements_include_of_etc_passwd_fails_without_leaking_it(server: Server, sm: Any) -> None:
    uri = put(
        server,
        "req/model.tar.gz",
        tarball({"code/inference.py": WHOAMI, "code/requirements.txt": "# needs nothing\n-r /etc/passwd\n"}),
    )
    desc = deploy(sm, "req-include", {"Image": PYTHON_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"] == (
        "Failed to install code/requirements.txt: line 2: -r (another requirements file) is not allowed in "
        "code/requirements.txt."
    )
    assert "root:x:0:0" not in json.dumps(desc, default=str)
    assert "root:x:0:0" not in server.logs("req-include")
    sm.delete_endpoint(EndpointName="req-include")


# --- extraction caps


def test_artifact_bomb_fails_the_endpoint_and_leaves_nothing(server: Server, sm: Any) -> None:
    bomb = zeros_tarball(200 * MIB)
    assert len(bomb) < 2 * MIB
    uri = put(server, "bomb/model.tar.gz", bomb)
    desc = deploy(sm, "bomb", {"Image": PYTHON_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"] == (
        f"Refused to extract model data {uri}: it expands to more than {64 * MIB} bytes, the limit for extracted "
        "model data (MODELHOST_MAX_ARTIFACT_BYTES; default 10 x the variant's VolumeSizeInGB, else 30 GiB)."
    )
    cache = server.data_dir / "model-cache"
    assert not list(cache.glob(".extract-*")) and not list(cache.rglob("zeros.bin"))  # nothing half-extracted
    sm.delete_endpoint(EndpointName="bomb")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="bomb", WaiterConfig={"Delay": 1, "MaxAttempts": 60})


# --- the instance quota


def quota_message(used: int, delta: int) -> str:
    return (
        f"The account-level service limit 'MODELHOST_MAX_INSTANCES for endpoint usage' is {MAX_INSTANCES} Instances, "
        f"with current utilization of {used} Instances and a request delta of {delta} Instances. Please set "
        "MODELHOST_MAX_INSTANCES on the server to increase this quota."
    )


def config(sm: Any, name: str, model: str, count: int) -> None:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": count,
                "InstanceType": "ml.m5.large",
            }
        ],
    )


def test_instance_quota(server: Server, sm: Any, model_uri: str) -> None:
    sm.create_model(
        ModelName="q", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": model_uri}
    )
    config(sm, "q-huge", "q", 1_000_000)  # accepted, as by SageMaker: the limit applies to endpoints
    config(sm, "q-one", "q", 1)
    config(sm, "q-two", "q", 2)
    limited = (400, "ResourceLimitExceeded")
    assert error_of(sm.create_endpoint, EndpointName="q-huge", EndpointConfigName="q-huge") == (
        *limited,
        quota_message(0, 1_000_000),
    )
    sm.create_endpoint(EndpointName="q-a", EndpointConfigName="q-two")
    assert wait_status(sm, "q-a", ("InService", "Failed"))["EndpointStatus"] == "InService"
    assert error_of(sm.create_endpoint, EndpointName="q-b", EndpointConfigName="q-two") == (
        *limited,
        quota_message(2, 2),
    )

    def scale(count: int) -> Any:
        return sm.update_endpoint_weights_and_capacities(
            EndpointName="q-a",
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": count}],
        )

    assert error_of(scale, count=4) == (*limited, quota_message(2, 2))
    scale(3)
    assert wait_status(sm, "q-a", ("InService", "Failed"))["EndpointStatus"] == "InService"
    # Blue/green runs the new fleet beside the old one: both count.
    assert error_of(sm.update_endpoint, EndpointName="q-a", EndpointConfigName="q-one") == (
        *limited,
        quota_message(3, 1),
    )
    scale(1)
    assert wait_status(sm, "q-a", ("InService", "Failed"))["EndpointStatus"] == "InService"
    config(sm, "q-two-b", "q", 2)
    sm.update_endpoint(EndpointName="q-a", EndpointConfigName="q-two-b")
    assert error_of(sm.create_endpoint, EndpointName="q-c", EndpointConfigName="q-one") == (
        *limited,
        quota_message(3, 1),
    )
    assert wait_status(sm, "q-a", ("InService", "Failed"))["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="q-a")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="q-a", WaiterConfig={"Delay": 1, "MaxAttempts": 60})


# --- webhooks


def test_internal_webhooks_are_refused_at_create_endpoint_config(sm: Any, model_uri: str) -> None:
    sm.create_model(
        ModelName="hooks", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": model_uri}
    )
    rule = "is a loopback, link-local, private or unspecified address; list it in MODELHOST_WEBHOOK_ALLOW to allow it."
    cases = [
        ("SuccessTopic", "http://127.0.0.1:8080/internal-admin", "its host 127.0.0.1"),
        ("ErrorTopic", "http://10.1.2.3/hook", "its host 10.1.2.3"),
        ("SuccessTopic", "http://169.254.169.254/latest/meta-data", "its host 169.254.169.254"),
        ("ErrorTopic", "https://[::1]/x", "its host ::1"),
        ("SuccessTopic", "http://0.0.0.0:9/", "its host 0.0.0.0"),
        ("SuccessTopic", "http://192.168.0.10/", "its host 192.168.0.10"),
    ]
    for i, (key, url, host) in enumerate(cases):
        status, code, message = error_of(
            sm.create_endpoint_config,
            EndpointConfigName=f"hooks-{i}",
            ProductionVariants=[
                {"VariantName": "v", "ModelName": "hooks", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
            ],
            AsyncInferenceConfig={
                "OutputConfig": {"S3OutputPath": "s3://iso/out/", "NotificationConfig": {key: url}},
            },
        )
        assert (status, code) == (400, "ValidationException")
        assert message == f"AsyncInferenceConfig NotificationConfig.{key} {url!r} is not allowed: {host} {rule}"
    status, code, message = error_of(
        sm.create_endpoint_config,
        EndpointConfigName="hooks-localhost",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "hooks", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "s3://iso/out/",
                "NotificationConfig": {"ErrorTopic": "http://localhost:1/"},
            }
        },
    )
    assert code == "ValidationException" and "its host localhost (" in message and rule in message


# --- the data dir's modes (last: after the server has written everything above)


def test_data_dir_is_private(server: Server, sm: Any) -> None:
    s3 = s3_client(server)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp/object")
    s3.upload_part(Bucket=BUCKET, Key="mp/object", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("modelhost.db", "buckets-meta/objects.db", "logs/endpoints/q-a.log", "logs/endpoints/bomb.log"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert any((data / "uploads").rglob("*"))
    loose = []
    for dirpath, dirnames, filenames in os.walk(data):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            if stat.S_IMODE(st.st_mode) & 0o077:
                loose.append(f"{path.relative_to(data)} {stat.S_IMODE(st.st_mode):o}")
    assert loose == []
    s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/object", UploadId=upload["UploadId"])


# --- MODELHOST_INSTANCE_USER


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _runs_as(python: str, user: pwd.struct_passwd, cwd: str) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", "import modelhost.serving.worker, uvicorn"],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            cwd=cwd,
            capture_output=True,
            timeout=60,
        )
    except OSError:
        return False
    return proc.returncode == 0


def _instance_python(base: Path, user: pwd.struct_passwd) -> str | None:
    """An interpreter the instance user can run with this environment's packages: the server's own, or a
    venv of a system Python of the same version pointing at them (when the server's lives in /root)."""
    if _runs_as(sys.executable, user, str(base)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        return None
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    (venv / "lib" / version / "site-packages" / "modelhost-test.pth").write_text(
        f"import site; site.addsitedir({site_packages!r})\n"
    )
    python = str(venv / "bin" / "python")
    return python if _runs_as(python, user, str(base)) else None


@pytest.fixture(scope="module")
def user_server() -> Iterator[tuple[Server, pwd.struct_passwd]]:
    if os.geteuid() != 0:
        pytest.skip("MODELHOST_INSTANCE_USER needs the tests to run as root (to start the server as root)")
    user = _ensure_user(INSTANCE_USER)
    base = Path(tempfile.mkdtemp(prefix="mh-iso-", dir="/tmp"))  # outside /tmp/pytest-of-root (0700)
    os.chmod(base, 0o755)
    try:
        python = _instance_python(base, user)
        if python is None:
            pytest.skip(f"no Python interpreter with this environment's packages can be run by {INSTANCE_USER}")
        env = {"MODELHOST_INSTANCE_USER": INSTANCE_USER}
        if python != sys.executable:
            env["MODELHOST_PYTHON"] = python
        srv = Server(base / "data", env=env).start()
        try:
            s3_client(srv).create_bucket(Bucket=BUCKET)
            yield srv, user
        finally:
            srv.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_instances_run_as_the_instance_user(user_server: tuple[Server, pwd.struct_passwd]) -> None:
    server, user = user_server
    sm, rt = server.clients()
    uri = put(server, "whoami/model.tar.gz", tarball({"code/inference.py": WHOAMI, "weights.bin": b"w"}))
    env = {"DB_PATH": str(server.data_dir / "modelhost.db"), "DATA_DIR": str(server.data_dir)}
    desc = deploy(sm, "whoami", {"Image": PYTHON_IMAGE, "ModelDataUrl": uri, "Environment": env})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    got = json.loads(rt.invoke_endpoint(EndpointName="whoami", ContentType="text/plain", Body="x")["Body"].read())
    assert got["uid"] == user.pw_uid and got["user"] == INSTANCE_USER
    assert got["gid"] == user.pw_gid and 0 not in got["groups"]
    assert got["home"] == str(server.data_dir / "instance-home" / INSTANCE_USER)
    assert got["db"] == "denied"  # modelhost.db is root's, 0600
    assert got["data_dir_listing"] == "denied"  # the data dir is 0710: traversable by its group, not listable
    assert got["model_files"] == ["code", "weights.bin"]  # the model cache is readable
    assert os.stat(server.data_dir / "modelhost.db").st_uid == 0
    sm.delete_endpoint(EndpointName="whoami")


def test_a_missing_instance_user_fails_the_endpoint(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("MODELHOST_INSTANCE_USER needs the tests to run as root")
    srv = Server(tmp_path / "data", env={"MODELHOST_INSTANCE_USER": "mh-no-such-user"}).start()
    try:
        s3_client(srv).create_bucket(Bucket=BUCKET)
        uri = put(srv, "whoami/model.tar.gz", tarball({"code/inference.py": WHOAMI}))
        sm, _ = srv.clients()
        desc = deploy(sm, "nouser", {"Image": PYTHON_IMAGE, "ModelDataUrl": uri})
        assert desc["EndpointStatus"] == "Failed"
        assert desc["FailureReason"] == (
            "MODELHOST_INSTANCE_USER mh-no-such-user does not exist on this machine; create it (useradd --system "
            "--no-create-home mh-no-such-user) or unset MODELHOST_INSTANCE_USER."
        )
    finally:
        srv.stop()
