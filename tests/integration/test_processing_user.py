"""With MODELHOST_INSTANCE_USER a processing job's program runs as that unprivileged user (the server
runs as root), with the job's own directory handed to it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from tests.helpers import ROLE, SKLEARN_IMAGE, Server

pytestmark = pytest.mark.slow
USER = "mh-test-instance"
SCRIPT = (
    b"import os, sys\nos.makedirs(sys.argv[1], exist_ok=True)\n"
    b"open(sys.argv[1] + '/who', 'w').write(str(os.getuid()))\n"
)


def runs_as(python: str, user: pwd.struct_passwd) -> bool:
    try:
        probe = subprocess.run(
            [python, "-c", "import modelhost.monitor.job"],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            cwd="/tmp",
            capture_output=True,
            timeout=60,
        )
    except OSError:
        return False
    return probe.returncode == 0


def user_python(base: Path, user: pwd.struct_passwd) -> str | None:
    """The server's interpreter if the user can run it, else a venv of the system Python of the same
    version that sees this environment's packages (when the server's lives under /root)."""
    if runs_as(sys.executable, user):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        return None
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    src = str(Path(__file__).resolve().parents[2] / "src")
    (venv / "lib" / version / "site-packages" / "modelhost-test.pth").write_text(
        f"import site; site.addsitedir({site_packages!r}); site.addsitedir({src!r})\n"
    )
    python = str(venv / "bin" / "python")
    return python if runs_as(python, user) else None


def test_processing_jobs_run_as_the_instance_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("MODELHOST_INSTANCE_USER needs the server to run as root")
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", USER], check=True, capture_output=True)
        user = pwd.getpwnam(USER)
    base = Path(tempfile.mkdtemp(prefix="mh-pu-", dir="/tmp"))  # outside /tmp/pytest-of-root (0700)
    os.chmod(base, 0o755)
    python = user_python(base, user)
    if python is None:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"no interpreter with this environment's packages can be run by {USER}")
    server = Server(base / "data", env={"MODELHOST_INSTANCE_USER": USER, "MODELHOST_PYTHON": python}).start()
    try:
        sm = server.clients()[0]
        s3 = boto3.client(
            "s3", endpoint_url=server.url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        s3.create_bucket(Bucket="who")
        s3.put_object(Bucket="who", Key="code/who.py", Body=SCRIPT)
        sm.create_processing_job(
            ProcessingJobName="who",
            ProcessingResources={
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            RoleArn=ROLE,
            AppSpecification={
                "ImageUri": SKLEARN_IMAGE,
                "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/who.py"],
                "ContainerArguments": ["/opt/ml/processing/output"],
            },
            ProcessingInputs=[
                {
                    "InputName": "code",
                    "S3Input": {
                        "S3Uri": "s3://who/code/who.py",
                        "LocalPath": "/opt/ml/processing/input/code",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "o",
                        "S3Output": {
                            "S3Uri": "s3://who/out",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        )
        deadline = time.monotonic() + 60
        while (desc := sm.describe_processing_job(ProcessingJobName="who"))["ProcessingJobStatus"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
        assert s3.get_object(Bucket="who", Key="out/who")["Body"].read().decode() == str(user.pw_uid)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
