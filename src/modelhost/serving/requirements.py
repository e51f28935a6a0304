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

pip is ``sys.executable -m pip --isolated`` with ``--disable-pip-version-check --no-input``: no pip
configuration file and no ``PIP_*`` variable is read by pip itself. A few ``PIP_*`` settings (from the
server's environment or the model's ``Environment``) are passed on as options (:data:`ENV_OPTIONS`:
``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_TRUSTED_HOST``, ``PIP_NO_INDEX``,
``PIP_RETRIES``, ``PIP_TIMEOUT``/``PIP_DEFAULT_TIMEOUT``, ``PIP_PROXY``); local index or find-links
locations only with ``MODELHOST_REQUIREMENTS_ALLOW_LOCAL=1``.

The file is checked before pip sees it (:func:`check_requirements`): options that make pip read other
files or indexes (``-r``, ``-c``, ``-i``/``--index-url``, ``--extra-index-url``, ``-f``/``--find-links``,
``-e``, and any option but a few harmless ones), environment variable references, and local paths or
``file:`` URLs outside the model directory (unless ``MODELHOST_REQUIREMENTS_ALLOW_LOCAL=1``, which the
platform sets from the server's setting) are refused with the line number and the rule, never the
line's text. Relative paths in the file are relative to the code directory.
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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from modelhost.serving.errors import ModelLoadError

log = logging.getLogger(__name__)

REQUIREMENTS_DIR_ENV = "MODELHOST_REQUIREMENTS_DIR"
REQUIREMENTS_FILE = "requirements.txt"
MARKER = ".modelhost-complete"
PIP_FLAGS = ("--isolated", "--disable-pip-version-check", "--no-input")
ALLOW_LOCAL_ENV = "MODELHOST_REQUIREMENTS_ALLOW_LOCAL"
# Options refused in the file, and why (pip would read another file, index or directory).
REFUSED_OPTIONS = {
    "-r": "another requirements file",
    "--requirement": "another requirements file",
    "-c": "a constraints file",
    "--constraint": "a constraints file",
    "-i": "an index URL",
    "--index-url": "an index URL",
    "--extra-index-url": "an index URL",
    "-f": "a find-links location",
    "--find-links": "a find-links location",
    "-e": "an editable install",
    "--editable": "an editable install",
}
# Options a line may carry (the rest are refused too).
ALLOWED_OPTIONS = frozenset(
    {"--pre", "--prefer-binary", "--only-binary", "--no-binary", "--require-hashes", "--no-index", "--trusted-host"}
)
ALLOWED_REQUIREMENT_OPTIONS = frozenset({"--hash"})
# PIP_* variables passed on as options (pip --isolated reads none); values that are locations are checked.
ENV_OPTIONS = (
    ("PIP_INDEX_URL", "--index-url", True),
    ("PIP_EXTRA_INDEX_URL", "--extra-index-url", True),
    ("PIP_FIND_LINKS", "--find-links", True),
    ("PIP_TRUSTED_HOST", "--trusted-host", False),
    ("PIP_RETRIES", "--retries", False),
    ("PIP_TIMEOUT", "--timeout", False),
    ("PIP_DEFAULT_TIMEOUT", "--timeout", False),
    ("PIP_PROXY", "--proxy", False),
)
MAX_REASON = 300
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


def allow_local() -> bool:
    return os.environ.get(ALLOW_LOCAL_ENV, "").lower() in ("1", "true", "yes")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text without comments) per logical line (``\\`` continuations joined)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        line = re.sub(r"(^|\s)#.*$", "", " ".join(pending)).strip()
        pending = []
        if line:
            yield start, line
    if pending:
        line = re.sub(r"(^|\s)#.*$", "", " ".join(pending)).strip()
        if line:
            yield start, line


def _option_name(token: str) -> str:
    if token.startswith("--"):
        return token.split("=", 1)[0][:40]
    return token[:2]  # -r/etc/passwd is -r


def _option_rule(name: str, what: str) -> str:
    if name in REFUSED_OPTIONS:
        return f"{name} ({REFUSED_OPTIONS[name]}) is not allowed in {what}."
    return f"option {name} is not allowed in {what}."


def _local_target(requirement: str) -> str | None:
    """The local path a requirement names (a path, ``file:`` URL, ``name @ file:...``, ``git+file:``), if any."""
    if " @ " in requirement or ("@" in requirement and "://" in requirement.split("@", 1)[1]):
        candidate = requirement.split("@", 1)[1].strip()
    else:
        candidate = requirement
    scheme, sep, _rest = candidate.partition(":")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme) and len(scheme) > 1:
        if "file" not in scheme.lower().split("+"):
            return None  # http(s), git+https, ...: not local
        url = candidate.split("+", 1)[1] if "+" in scheme else candidate
        return unquote(urlparse(url.split("#", 1)[0]).path) or "/"
    if "@" in requirement:
        return None
    if "/" in candidate or "\\" in candidate or candidate.startswith((".", "~")):
        return candidate.split("#", 1)[0]
    if candidate.split("#", 1)[0].lower().endswith(LOCAL_SUFFIXES):
        return candidate.split("#", 1)[0]
    return None


def check_requirements(requirements: Path, model_dir: Path, what: str, local_ok: bool) -> None:
    """Refuse lines that make pip read anything but the index and the model's own files (ModelLoadError
    naming the line number and the rule, never the line)."""
    try:
        text = requirements.read_text("utf-8", "replace")
    except OSError as e:
        raise ModelLoadError(f"Failed to install {what}: {e.strerror or e}") from None
    root = Path(os.path.realpath(model_dir))

    def refuse(number: int, rule: str) -> ModelLoadError:
        return ModelLoadError(f"Failed to install {what}: line {number}: {rule}")

    for number, line in _logical_lines(text):
        if "${" in line:
            raise refuse(number, "environment variable references (${...}) are not allowed.")
        tokens = line.split()
        if tokens[0].startswith("-"):
            name = _option_name(tokens[0])
            if name not in ALLOWED_OPTIONS:
                raise refuse(number, _option_rule(name, what))
            continue
        # pip reads the options of a requirement line from its first token starting with "-".
        requirement = line.split(" -", 1)[0].split(";", 1)[0].strip()
        for token in tokens[1:]:
            if token.startswith("-") and _option_name(token) not in ALLOWED_REQUIREMENT_OPTIONS:
                raise refuse(number, _option_rule(_option_name(token), what))
        target = _local_target(requirement)
        if target is None or local_ok:
            continue
        path = Path(target).expanduser()
        real = Path(os.path.realpath(path if path.is_absolute() else requirements.parent / path))
        if real != root and not real.is_relative_to(root):
            raise refuse(
                number,
                "a local path or file: URL outside the model directory is not allowed "
                f"({ALLOW_LOCAL_ENV}=1 on the server allows it).",
            )


def _is_local_location(value: str) -> bool:
    return value.startswith("file:") or "://" not in value


def env_options(local_ok: bool) -> list[str]:
    """pip options from the PIP_* variables pip --isolated ignores."""
    out: list[str] = []
    for var, option, is_location in ENV_OPTIONS:
        for value in os.environ.get(var, "").split():
            if is_location and _is_local_location(value) and not local_ok:
                print(f"{var}: a local location is ignored (set {ALLOW_LOCAL_ENV}=1 on the server)", flush=True)
                continue
            out += [option, value]
    if os.environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        out.append("--no-index")
    return out


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
        last = last.removeprefix("ERROR:").strip()[:MAX_REASON]
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
    options = env_options(allow_local())
    _run_pip(
        ["install", *PIP_FLAGS, *options, "--dry-run", "--report", str(report), "-r", str(requirements)],
        requirements.parent,
        what,
    )
    items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    report.unlink()
    if items:
        names = ", ".join(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items)
        print(f"{what}: installing {names} into {staging.parent}", flush=True)
        _run_pip(
            [
                "install",
                *PIP_FLAGS,
                *options,
                "--no-deps",
                "--target",
                str(staging),
                *(_requirement_url(i) for i in items),
            ],
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
    check_requirements(requirements, model_dir, what, allow_local())
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
