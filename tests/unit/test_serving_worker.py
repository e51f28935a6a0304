"""The real worker process on a unix socket: /ping, /invocations, errors, load failure exit code."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

SRC = Path(__file__).resolve().parents[2] / "src"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def request(
    sock: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = UnixHTTPConnection(sock)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def start_worker(model_dir: Path, sock: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **env}
    for name in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"):
        full_env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "modelhost.serving.worker", "--uds", str(sock), "--model-dir", str(model_dir)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_ready(proc: subprocess.Popen[bytes], sock: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "worker exited"
        if sock.exists():
            try:
                status, body, _ = request(str(sock), "GET", "/ping")
                if status == 200:
                    assert body == b""
                    return
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("worker did not answer /ping in time")


@pytest.fixture(scope="module")
def sklearn_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LinearRegression]]:
    tmp = tmp_path_factory.mktemp("worker")
    model_dir = tmp / "model"
    model_dir.mkdir()
    x, y = load_diabetes(return_X_y=True)
    model = LinearRegression().fit(x, y)
    joblib.dump(model, model_dir / "model.joblib")
    sock = tmp / "w.sock"
    proc = start_worker(model_dir, sock, MODELHOST_RUNTIME="sklearn")
    try:
        wait_ready(proc, sock)
        yield str(sock), model
    finally:
        proc.terminate()
        rc = proc.wait(timeout=10)
        out = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == 0  # SIGTERM is a graceful shutdown
    assert f"serving sklearn model from {model_dir} on {sock}" in out
    assert out.count("\n") == 1  # nothing logged per request


def test_invocations_csv_and_json(sklearn_worker: tuple[str, LinearRegression]) -> None:
    sock, model = sklearn_worker
    x = load_diabetes(return_X_y=True)[0][:3]
    csv = "\n".join(",".join(repr(v) for v in row) for row in x.tolist())
    status, body, resp = request(
        sock, "POST", "/invocations", csv.encode(), {"Content-Type": "text/csv", "Accept": "application/json"}
    )
    assert status == 200 and resp.getheader("Content-Type") == "application/json"
    np.testing.assert_allclose(json.loads(body), model.predict(x))

    status, body, resp = request(
        sock,
        "POST",
        "/invocations",
        json.dumps({"instances": x.tolist()}).encode(),
        {"Content-Type": "application/json", "Accept": "text/csv"},
    )
    assert status == 200 and resp.getheader("Content-Type") == "text/csv"
    np.testing.assert_allclose([float(v) for v in body.decode().split()], model.predict(x))


def test_errors_do_not_kill_worker(sklearn_worker: tuple[str, LinearRegression]) -> None:
    sock, model = sklearn_worker
    status, body, _ = request(sock, "POST", "/invocations", b"1,2\n3,oops", {"Content-Type": "text/csv"})
    assert status == 400
    assert body.decode() == ("Failed to decode text/csv body: row 2, column 2: could not convert 'oops' to a number")

    status, body, _ = request(sock, "POST", "/invocations", b"[[1, 2]]", {"Content-Type": "application/json"})
    assert status == 500  # wrong feature count: the model's own error, with the traceback
    assert body.decode().startswith("ValueError: ") and "Traceback" in body.decode()

    assert request(sock, "POST", "/invocations", b"x", {"Content-Type": "image/png"})[0] == 415
    status, body, _ = request(
        sock, "POST", "/invocations", b"[[" + b",".join([b"0"] * 10) + b"]]", {"Accept": "image/png"}
    )
    assert status == 406 and body.startswith(b"Accept type 'image/png' is not supported")
    assert request(sock, "GET", "/nope")[0] == 404

    x = load_diabetes(return_X_y=True)[0][:1]
    status, body, _ = request(sock, "POST", "/invocations", json.dumps(x.tolist()).encode())
    assert status == 200
    np.testing.assert_allclose(json.loads(body), model.predict(x))


def test_custom_attributes_round_trip(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        "def model_fn(model_dir):\n    return None\n"
        "import time\n"
        "def transform_fn(model, data, content_type, accept, context):\n"
        "    if data == '\"slow\"':\n"
        "        time.sleep(1.0)\n"
        "    context.response_custom_attributes = 'seen=' + context.custom_attributes\n"
        "    return data.upper(), 'text/plain'\n"
    )
    sock = tmp_path / "c.sock"
    proc = start_worker(tmp_path, sock, MODELHOST_RUNTIME="python")
    try:
        wait_ready(proc, sock)
        status, body, resp = request(
            sock.as_posix(), "POST", "/invocations", b'"hi"', {"X-Amzn-SageMaker-Custom-Attributes": "k=v"}
        )
        assert status == 200 and body == b'"HI"'
        assert resp.getheader("Content-Type") == "text/plain"
        assert resp.getheader("X-Amzn-SageMaker-Custom-Attributes") == "seen=k=v"

        # /ping stays responsive while the model thread is busy.
        slow = threading.Thread(
            target=request,
            args=(sock.as_posix(), "POST", "/invocations", b'"slow"', {"X-Amzn-SageMaker-Custom-Attributes": "s"}),
        )
        slow.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        assert request(sock.as_posix(), "GET", "/ping")[0] == 200
        assert time.monotonic() - t0 < 0.5
        assert slow.is_alive()
        slow.join()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_model_fn_failure_exits_3_with_reason(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    code = "def model_fn(model_dir):\n    raise ValueError('boom')\n"
    (tmp_path / "code" / "inference.py").write_text(code)
    error_file = tmp_path / "error.txt"
    sock = tmp_path / "f.sock"
    proc = start_worker(tmp_path, sock, MODELHOST_RUNTIME="python", MODELHOST_ERROR_FILE=str(error_file))
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 3
    assert error_file.read_text() == "model_fn raised ValueError: boom\n"
    assert "Traceback" in err.decode() and "boom" in err.decode()
    assert not sock.exists()  # never listened
