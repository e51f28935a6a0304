"""Helpers for the export tests: `modelhost serve-model` as a process, the Dockerfile's steps run
in a fresh venv (no container engine here), the manifests' validators."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import site
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.30.0"  # the Kubernetes OpenAPI schema version the manifests are checked against (pinned)


def wait_ping(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve-model exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"serve-model did not answer /ping within {timeout}s:\n{log.read_text()}")


@contextlib.contextmanager
def running(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start argv (a serve-model command whose --port is given as {port}); yield its URL; stop it by PID."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ping(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serve_model(path: Path, log: Path) -> contextlib.AbstractContextManager[str]:
    return running([sys.executable, "-m", "modelhost.cli", "serve-model", str(path), "--port", "{port}"], log)


def post(url: str, body: bytes, content_type: str, accept: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def validate_kubernetes(docs: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def validate_ecs(task_definition: dict[str, Any]) -> None:
    """Against botocore's ecs RegisterTaskDefinition input shape (raises ParamValidationError)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(task_definition, model.operation_model("RegisterTaskDefinition").input_shape)


def build_wheel(dest: Path) -> Path:
    """modelhost as a wheel from this checkout (what `pip install modelhost` gets from an index)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(REPO)],
        check=True,
        timeout=300,
    )
    return next(dest.glob("modelhost-*.whl"))


def fresh_venv(root: Path) -> Path:
    """A new venv whose own site-packages is empty, and which sees this test venv's third-party packages
    through a .pth path line (not its .pth hooks, so not the editable modelhost): the Dockerfile's pip
    install then installs modelhost from the wheel only (--no-deps), instead of downloading and building
    torch & co. again. That keeps the test at seconds while the modelhost that runs is the installed wheel."""
    venv = root / "venv"
    # --without-pip, and a `pip` that is this venv's pip working on the new one (pip --python): the same
    # install, without ensurepip's seconds of copying pip into every test venv
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    shim = venv / "bin" / "pip"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip --python "{venv / "bin" / "python"}" "$@"\n')
    shim.chmod(0o755)
    own = next(venv.glob("lib/python*/site-packages"))
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (own / "_test_dependencies.pth").write_text("\n".join(paths) + "\n")
    return venv


def run_dockerfile(context: Path, root: Path, wheel_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    """Run a Dockerfile's steps: RUN in the venv's shell, COPY into ``root`` (the image's /), ENV kept.
    Returns the ENTRYPOINT argv (paths under ``root``), its environment and the venv."""
    venv = fresh_venv(root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    # pip from the local wheel only: no index, no dependency downloads (they are on the venv's path)
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir), PIP_NO_DEPS="1", PIP_IGNORE_INSTALLED="1")
    entrypoint: list[str] = []
    for raw in (context / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op == "FROM" or op == "EXPOSE":
            continue
        if op == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif op == "RUN":
            command = rest.replace("/tmp/", f"{root}/tmp/")
            (root / "tmp").mkdir(exist_ok=True)
            subprocess.run(["bash", "-c", command], check=True, env=env, cwd=root, timeout=600)
        elif op == "COPY":
            src, dst = shlex.split(rest)
            target = root / dst.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if (context / src).is_dir():
                shutil.copytree(context / src, target)
            else:
                shutil.copy2(context / src, target)
        elif op == "ENTRYPOINT":
            entrypoint = [a.replace("/opt/", f"{root}/opt/") for a in json.loads(rest)]
        else:
            raise AssertionError(f"the test does not know Dockerfile step {op}")
    assert entrypoint, "the Dockerfile has no ENTRYPOINT"
    return entrypoint, env, venv
