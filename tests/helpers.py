"""Shared test helpers: a real modelhost server process on a free loopback port, real clients,
and model artifacts built from scikit-learn / XGBoost trained on load_diabetes."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROLE = "arn:aws:iam::123456789012:role/modelhost-test"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PYTHON_IMAGE = "modelhost/python:latest"
SERVER_START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are picked, because the
    kernel may hand a just-closed port out again (CI saw Ray refuse two components on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass
class Server:
    """A real `modelhost serve` process; stopped by its own PID."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    credentials_file: Path | None = None  # --credentials-file: requests must be signed by its keys

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MODELHOST_STOP_GRACE": "5",
            "MODELHOST_PING_INTERVAL": "1",
            # Tests deploy from their temp dirs and run many endpoints per server.
            "MODELHOST_ALLOWED_MODEL_DIRS": tempfile.gettempdir(),
            "MODELHOST_MAX_INSTANCES": "64",
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelhost.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *(["--credentials-file", str(self.credentials_file)] if self.credentials_file else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"modelhost serve exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"modelhost serve did not answer /ping within {SERVER_START_TIMEOUT}s")

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def put_object(self, uri: str, data: bytes) -> None:
        """Write into the embedded bucket store (s3://bucket/key lives under <data-dir>/buckets)."""
        assert uri.startswith("s3://")
        path = self.data_dir / "buckets" / uri.removeprefix("s3://")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def logs(self, endpoint: str) -> str:
        path = self.data_dir / "logs" / "endpoints" / f"{endpoint}.log"
        return path.read_text() if path.exists() else ""

    def clients(self, read_timeout: float = 70) -> tuple[Any, Any]:
        session = boto3.Session(aws_access_key_id="AKIDTEST", aws_secret_access_key="secret", region_name="us-east-1")
        config = Config(read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": 1})
        return (
            session.client("sagemaker", endpoint_url=self.url, config=config),
            session.client("sagemaker-runtime", endpoint_url=self.url, config=config),
        )


def stored_object(data_dir: Path, uri: str) -> bytes | None:
    """The bytes of ``s3://bucket/key`` in a data dir's bucket store, None if there is none: its
    file, or a small object kept inline in the bucket index (read-only, beside a running server)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    path = data_dir / "buckets" / bucket / key
    if path.is_file():
        return path.read_bytes()
    index = data_dir / "buckets-meta" / "objects.db"
    if not index.exists():
        return None
    import sqlite3

    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT data FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
    finally:
        db.close()
    return bytes(row[0]) if row is not None and row[0] is not None else None


def stored_keys(data_dir: Path, bucket: str, prefix: str = "") -> list[str]:
    """The keys under ``prefix`` in a data dir's bucket store (files and inline objects), sorted."""
    root = data_dir / "buckets" / bucket
    keys = (
        {p.relative_to(root).as_posix() for p in (root / prefix).rglob("*") if p.is_file()} if root.exists() else set()
    )
    keys = {k for k in keys if k.startswith(prefix)}
    index = data_dir / "buckets-meta" / "objects.db"
    if index.exists():
        import sqlite3

        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT key FROM objects WHERE bucket=? AND data IS NOT NULL AND substr(key, 1, ?) = ?",
                (bucket, len(prefix), prefix),
            ).fetchall()
        finally:
            db.close()
        keys |= {r[0] for r in rows}
    return sorted(keys)


def tarball(files: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def diabetes() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


def sklearn_model() -> tuple[bytes, Any]:
    """(model.tar.gz with model.joblib, the fitted model)."""
    import joblib
    from sklearn.linear_model import LinearRegression

    x, y = diabetes()
    model = LinearRegression().fit(x, y)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return tarball({"model.joblib": buf.getvalue()}), model


def csv_row(values: Iterable[float]) -> str:
    return ",".join(f"{v:.6f}" for v in values)


def wait_status(sm: Any, name: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    """Poll DescribeEndpoint until EndpointStatus is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] in statuses:
            return desc
        if time.monotonic() > deadline:
            raise AssertionError(f"endpoint {name} stuck in {desc['EndpointStatus']}: {desc.get('FailureReason')}")
        time.sleep(0.2)


def deploy(sm: Any, name: str, container: dict, instances: int = 1, wait: bool = True, **variant: Any) -> dict:
    """CreateModel + CreateEndpointConfig + CreateEndpoint, all named ``name``."""
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": instances,
                "InstanceType": "ml.m5.large",
                **variant,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if not wait:
        return {}
    return wait_status(sm, name, ("InService", "Failed"))


@contextlib.contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port (its URL), stopped by its PID afterwards."""
    import pytest

    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]'; it is in the test extra)")
    port = free_port()
    with open(log_path, "wb") as log:
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


def moto_s3(url: str) -> Any:
    """A boto3 S3 client of a moto server."""
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


class RawClient:
    """A keep-alive http.client connection to a server, each request SigV4-signed by botocore
    (the test keys; a server without a credentials file accepts them). Much faster than boto3
    for load and fuzz tests; reconnects when the server closes the connection."""

    def __init__(self, url: str, key: str = "AKIDTEST", secret: str = "secret", region: str = "us-east-1") -> None:
        import http.client
        from urllib.parse import urlsplit

        from botocore.credentials import Credentials

        self.url = url
        self.region = region
        self.credentials = Credentials(key, secret)
        parts = urlsplit(url)
        self._new = lambda: http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.conn = self._new()

    def signed_headers(
        self, method: str, path: str, body: bytes, headers: dict[str, str], service: str
    ) -> dict[str, str]:
        from botocore.auth import S3SigV4Auth, SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=self.url + path, data=body, headers=dict(headers))
        signer = S3SigV4Auth if service == "s3" else SigV4Auth
        signer(self.credentials, service, self.region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        service: str | None = "sagemaker",
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body). ``service=None`` sends it unsigned."""
        import http.client

        sent = dict(headers or {})
        if service is not None:
            sent = self.signed_headers(method, path, body, sent, service)
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=sent)
                resp = self.conn.getresponse()
                data = resp.read()
                answer = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.conn.close()
                    self.conn = self._new()
                return resp.status, answer, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = self._new()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def s3_backed_server(data_dir: Path, s3_url: str, **kwargs: Any) -> Iterator[Server]:
    """A modelhost server whose s3:// is the S3-compatible service at ``s3_url`` (moto's, with its dummy keys)."""
    env = {"MODELHOST_S3_ENDPOINT_URL": s3_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    srv = Server(data_dir, env={**env, **kwargs.pop("env", {})}, **kwargs)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
