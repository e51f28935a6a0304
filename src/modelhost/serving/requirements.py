"""``code/requirements.txt``: installed once per content into an isolated overlay, shared by instances.

The SageMaker framework containers pip-install ``requirements.txt`` into the container's Python before the
user module is imported. Instances here share the server's environment, so the packages go into an overlay
directory instead, which the worker puts at the front of ``sys.path``:

* the overlay is ``$MODELHOST_REQUIREMENTS_DIR/<key>/`` where ``key`` is the sha256 of the file's content
  (plus the interpreter, and the bytes of any local wheel/sdist the file names), so every instance,
  endpoint and server restart with the same requirements reuses one install;
* pip resolves against the running environment first (``pip install --dry-run --report``), so pins the
  environment already satisfies (``numpy==<installed>``) are not installed again and the environment is
  never modified; only what is missing or differs is then installed (``pip install --target --no-deps``
  of exactly the resolved files);
* an exclusive file lock per key makes concurrent instances install once; the overlay appears by an atomic
  rename of a finished directory that already holds the completion marker, so a crash never leaves a half
  install that looks complete;
* pip's output goes to the worker's stdout (the endpoint's log); a failure raises ModelLoadError
  ``Failed to install code/requirements.txt: <pip's last error line>``.

pip is ``sys.executable -m pip`` with ``--disable-pip-version-check --no-input`` and the process
environment, so ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_TRUSTED_HOST``, ``PIP_CONFIG_FILE``... from
the model's ``Environment`` apply. Relative paths in the file are relative to the code directory.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelhost.serving.errors import ModelLoadError

log = logging.getLogger(__name__)

REQUIREMENTS_DIR_ENV = "MODELHOST_REQUIREMENTS_DIR"
REQUIREMENTS_FILE = "requirements.txt"
MARKER = ".modelhost-complete"
PIP_FLAGS = ("--disable-pip-version-check", "--no-input")
# Lines of a requirements file that name a local archive (hashed into the key: same text, other bytes).
LOCAL_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")


def default_root(model_dir: Path) -> Path:
    """``$MODELHOST_REQUIREMENTS_DIR``, else ``<model_dir>/../.requirements`` when writable, else a temp dir."""
    configured = os.environ.get(REQUIREMENTS_DIR_ENV)
    if configured:
        return Path(configured)
    parent = model_dir.resolve().parent
    if os.access(parent, os.W_OK):
        return parent / ".requirements"
    return Path(tempfile.gettempdir()) / f"modelhost-requirements-{os.getuid()}"


def _local_file(line: str, base: Path) -> Path | None:
    """The local archive a requirements line names, if any (``./x.whl``, ``/abs/x.tar.gz``, ``file:///x.whl``)."""
    token = line.split(";", 1)[0].split(" #", 1)[0].strip()
    if token.startswith("file://"):
        token = token[len("file://") :]
    elif token.startswith("-") or "://" in token:
        return None
    token = token.split("#", 1)[0]
    if not token.lower().endswith(LOCAL_SUFFIXES):
        return None
    path = Path(token)
    path = path if path.is_absolute() else base / path
    return path if path.is_file() else None


def cache_key(requirements: Path) -> str:
    """sha256 of the file's content, the interpreter, and the bytes of local archives it names."""
    content = requirements.read_bytes()
    digest = hashlib.sha256(content)
    digest.update(f"\0{sys.implementation.cache_tag}\0{platform.machine()}\0{sys.prefix}".encode())
    for raw in content.decode("utf-8", "replace").splitlines():
        local = _local_file(raw, requirements.parent)
        if local is not None:
            digest.update(b"\0" + hashlib.sha256(local.read_bytes()).digest())
    return digest.hexdigest()


def activate(overlay: Path) -> None:
    """Put an installed overlay first on ``sys.path`` (and on PYTHONPATH/PATH for subprocesses of user code)."""
    path = str(overlay)
    if path not in sys.path:
        sys.path.insert(0, path)
    pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path + (os.pathsep + pythonpath if pythonpath else "")
    scripts = overlay / "bin"
    if scripts.is_dir():
        os.environ["PATH"] = str(scripts) + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def _locked(lock_path: Path, what: str) -> Iterator[None]:
    with open(lock_path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another instance is installing it; waiting", what)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_pip(args: list[str], cwd: Path, what: str) -> None:
    """Run pip, copying its output to stdout; ModelLoadError with its last error line when it fails."""
    cmd = [sys.executable, "-m", "pip", *args]
    print(f"{what}: running {' '.join(cmd)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=50)
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            line = line.rstrip()
            print(f"pip: {line}", flush=True)
            if line.strip():
                tail.append(line.strip())
    code = proc.wait()
    if code != 0:
        errors = [t for t in tail if t.startswith("ERROR:")]
        last = errors[-1] if errors else tail[-1] if tail else f"pip exited with code {code}"
        last = last.removeprefix("ERROR:").strip()
        raise ModelLoadError(f"Failed to install {what}: {last}")


def _requirement_url(item: dict[str, Any]) -> str:
    """A pip requirement for exactly the file/commit the dry run resolved (hash-checked when known)."""
    info = item["download_info"]
    url: str = info["url"]
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        url = f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
        return url
    hashes = info.get("archive_info", {}).get("hashes") or {}
    if "sha256" in hashes and "#" not in url:
        url += f"#sha256={hashes['sha256']}"
    return url


def _install(requirements: Path, staging: Path, what: str) -> int:
    """Resolve against this environment, install what is missing into ``staging``; the number installed."""
    report = staging / ".pip-report.json"
    _run_pip(
        ["install", *PIP_FLAGS, "--dry-run", "--report", str(report), "-r", str(requirements)],
        requirements.parent,
        what,
    )
    items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    report.unlink()
    if items:
        names = ", ".join(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items)
        print(f"{what}: installing {names} into {staging.parent}", flush=True)
        _run_pip(
            ["install", *PIP_FLAGS, "--no-deps", "--target", str(staging), *(_requirement_url(i) for i in items)],
            requirements.parent,
            what,
        )
    return len(items)


def ensure_requirements(code_dir: Path, model_dir: Path, root: Path | None = None) -> Path | None:
    """Install ``code_dir/requirements.txt`` (once per content) and activate it; None when there is none."""
    requirements = code_dir / REQUIREMENTS_FILE
    if not requirements.is_file():
        return None
    try:
        what = str(requirements.relative_to(model_dir))
    except ValueError:
        what = str(requirements)
    if os.environ.get("CA_REPOSITORY_ARN"):
        log.warning("%s: CA_REPOSITORY_ARN (CodeArtifact) is not supported; using pip's configured index", what)
    root = root or default_root(model_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        key = cache_key(requirements)
    except OSError as e:
        raise ModelLoadError(f"Failed to install {what}: {e}") from e
    overlay = root / key
    if (overlay / MARKER).is_file():
        print(f"{what}: reusing the packages already installed in {overlay}", flush=True)
        activate(overlay)
        return overlay
    started = time.monotonic()
    with _locked(root / f"{key}.lock", what):
        if (overlay / MARKER).is_file():
            print(f"{what}: reusing the packages another instance installed in {overlay}", flush=True)
        else:
            for stale in root.glob(f".{key}.tmp-*"):  # left by a killed install; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            if overlay.exists():  # no marker: an incomplete directory from elsewhere
                shutil.rmtree(overlay, ignore_errors=True)
            staging = root / f".{key}.tmp-{os.getpid()}"
            staging.mkdir()
            try:
                count = _install(requirements, staging, what)
                shutil.copyfile(requirements, staging / REQUIREMENTS_FILE)
                marker = {
                    "requirements": requirements.read_text("utf-8", "replace"),
                    "installed": count,
                    "python": sys.executable,
                    "created": time.time(),
                }
                (staging / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
                os.rename(staging, overlay)
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, Exception) and not isinstance(e, ModelLoadError):
                    raise ModelLoadError(f"Failed to install {what}: {type(e).__name__}: {e}") from e
                raise
            print(
                f"{what}: installed {count} package(s) into {overlay} in {time.monotonic() - started:.1f}s",
                flush=True,
            )
    activate(overlay)
    return overlay
