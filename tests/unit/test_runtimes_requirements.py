"""code/requirements.txt: content-keyed overlay installs with real pip, offline (local wheels, satisfied pins)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelhost.serving import requirements as req
from modelhost.serving.errors import ModelLoadError
from tests.runtime_artifacts import make_wheel

OFFLINE_PIP = {
    "PIP_CONFIG_FILE": os.devnull,  # ignore machine-wide indexes/find-links: only what the file names
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
    "PIP_FIND_LINKS": "",
}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in OFFLINE_PIP.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(req.REQUIREMENTS_DIR_ENV, raising=False)
    # activate() edits these; restore them for the other tests.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PATH", os.environ["PATH"])


def _model(tmp_path: Path, lines: list[str]) -> tuple[Path, Path]:
    model = tmp_path / "model"
    code = model / "code"
    code.mkdir(parents=True)
    (code / "requirements.txt").write_text("\n".join(lines) + "\n")
    return model, code


def test_no_requirements_file(tmp_path: Path) -> None:
    assert req.ensure_requirements(tmp_path / "code", tmp_path, tmp_path / "root") is None
    assert not (tmp_path / "root").exists()


def test_cache_key_covers_content_and_local_archives(tmp_path: Path) -> None:
    code = tmp_path / "code"
    wheel = make_wheel(code / "wheels", "keypkg", "1.0", "X = 1\n")
    (code / "requirements.txt").write_text("wheels/keypkg-1.0-py3-none-any.whl\n")
    key1 = req.cache_key(code / "requirements.txt")
    assert key1 == req.cache_key(code / "requirements.txt")
    make_wheel(code / "wheels", "keypkg", "1.0", "X = 2\n")  # same name, other bytes
    assert wheel.exists() and req.cache_key(code / "requirements.txt") != key1
    (code / "requirements.txt").write_text("wheels/keypkg-1.0-py3-none-any.whl\n# comment\n")
    assert req.cache_key(code / "requirements.txt") not in (key1,)


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("wheels/a-1.0-py3-none-any.whl", True),
        ("./wheels/a-1.0-py3-none-any.whl ; python_version >= '3'", True),
        ("numpy==1.0", False),
        ("-r other.txt", False),
        ("https://example.com/a-1.0-py3-none-any.whl", False),
        ("wheels/missing-1.0-py3-none-any.whl", False),
    ],
)
def test_local_file(tmp_path: Path, line: str, found: bool) -> None:
    make_wheel(tmp_path / "wheels", "a", "1.0", "")
    assert (req._local_file(line, tmp_path) is not None) is found


def test_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(req.REQUIREMENTS_DIR_ENV, str(tmp_path / "configured"))
    assert req.default_root(tmp_path / "m") == tmp_path / "configured"
    monkeypatch.delenv(req.REQUIREMENTS_DIR_ENV)
    (tmp_path / "m").mkdir()
    assert req.default_root(tmp_path / "m") == tmp_path.resolve() / ".requirements"


def test_installs_local_wheel_skips_satisfied_pin_and_reuses(
    tmp_path: Path, offline: None, capfd: pytest.CaptureFixture[str]
) -> None:
    model, code = _model(tmp_path, [f"numpy=={np.__version__}", "wheels/reqpkg_unit-0.3-py3-none-any.whl"])
    make_wheel(code / "wheels", "reqpkg_unit", "0.3", "VALUE = 'from the overlay'\n")
    root = tmp_path / "root"
    overlay = req.ensure_requirements(code, model, root)
    assert overlay is not None and overlay.parent == root
    assert sys.path[0] == str(overlay)
    assert (overlay / req.MARKER).is_file()
    assert (overlay / "reqpkg_unit" / "__init__.py").is_file()
    assert not (overlay / "numpy").exists()  # satisfied by the environment: not installed again
    import reqpkg_unit  # type: ignore[import-not-found]

    assert reqpkg_unit.VALUE == "from the overlay"
    out = capfd.readouterr().out
    assert "installing reqpkg_unit==0.3" in out and "installed 1 package(s)" in out

    # Same content again (another instance / a restart): no pip at all.
    assert req.ensure_requirements(code, model, root) == overlay
    out = capfd.readouterr().out
    assert "reusing the packages already installed" in out and "pip" not in out.replace(str(overlay), "")
    assert not list(root.glob(".*.tmp-*"))


def test_failure_names_requirements_and_pip_error(tmp_path: Path, offline: None) -> None:
    model, code = _model(tmp_path, ["no-such-package-xyz==9.9"])
    with pytest.raises(ModelLoadError) as info:
        req.ensure_requirements(code, model, tmp_path / "root")
    reason = info.value.reason
    assert reason.startswith("Failed to install code/requirements.txt: ")
    assert "no-such-package-xyz" in reason
    assert not [p for p in (tmp_path / "root").iterdir() if not p.name.endswith(".lock")]  # nothing half-done


def test_concurrent_instances_install_once(tmp_path: Path) -> None:
    model, code = _model(tmp_path, ["wheels/reqpkg_conc-1.0-py3-none-any.whl"])
    make_wheel(code / "wheels", "reqpkg_conc", "1.0", "OK = True\n")
    root = tmp_path / "root"
    script = (
        "import sys; from pathlib import Path; from modelhost.serving.requirements import ensure_requirements;"
        f"ensure_requirements(Path({str(code)!r}), Path({str(model)!r}), Path({str(root)!r}));"
        "import reqpkg_conc; assert reqpkg_conc.OK"
    )
    env = {**os.environ, **OFFLINE_PIP}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum("installing reqpkg_conc==1.0" in o for o in outputs) == 1, outputs
    assert sum("reusing the packages" in o for o in outputs) == 2, outputs
    installed = [p.name for p in root.iterdir() if not p.name.endswith(".lock")]
    assert installed == [req.cache_key(code / "requirements.txt")]


# --- what the file may make pip read (issue 10): refused before pip runs, with the line number and the rule

RULE_LOCAL = (
    "a local path or file: URL outside the model directory is not allowed "
    "(MODELHOST_REQUIREMENTS_ALLOW_LOCAL=1 on the server allows it)."
)


def test_include_of_etc_passwd_is_refused_without_its_content(
    tmp_path: Path, offline: None, capfd: pytest.CaptureFixture[str]
) -> None:
    model, code = _model(tmp_path, ["# first", "-r /etc/passwd"])
    with pytest.raises(ModelLoadError) as info:
        req.ensure_requirements(code, model, tmp_path / "root")
    assert info.value.reason == (
        "Failed to install code/requirements.txt: line 2: -r (another requirements file) is not allowed in "
        "code/requirements.txt."
    )
    out = capfd.readouterr().out
    assert "root:" not in out and "pip" not in out  # pip never ran
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("-r/etc/passwd", "-r (another requirements file) is not allowed in code/requirements.txt."),
        (
            "--requirement=/etc/passwd",
            "--requirement (another requirements file) is not allowed in code/requirements.txt.",
        ),
        ("-c /etc/passwd", "-c (a constraints file) is not allowed in code/requirements.txt."),
        ("--constraint /etc/passwd", "--constraint (a constraints file) is not allowed in code/requirements.txt."),
        ("-i http://evil.example/simple", "-i (an index URL) is not allowed in code/requirements.txt."),
        (
            "--index-url http://evil.example/simple",
            "--index-url (an index URL) is not allowed in code/requirements.txt.",
        ),
        (
            "--extra-index-url=http://evil.example/",
            "--extra-index-url (an index URL) is not allowed in code/requirements.txt.",
        ),
        ("-f /etc", "-f (a find-links location) is not allowed in code/requirements.txt."),
        ("--find-links /etc", "--find-links (a find-links location) is not allowed in code/requirements.txt."),
        ("-e /etc/project", "-e (an editable install) is not allowed in code/requirements.txt."),
        ("--editable=git+file:///etc", "--editable (an editable install) is not allowed in code/requirements.txt."),
        ("--src /tmp", "option --src is not allowed in code/requirements.txt."),
        ("pkg==1 --global-option=build_ext", "option --global-option is not allowed in code/requirements.txt."),
        ("/etc/passwd", RULE_LOCAL),
        ("file:///etc/passwd", RULE_LOCAL),
        ("pkg @ file:///etc/pkg-1.0-py3-none-any.whl", RULE_LOCAL),
        ("../../../etc/pkg-1.0-py3-none-any.whl", RULE_LOCAL),
        ("git+file:///etc/repo#egg=pkg", RULE_LOCAL),
        ("pkg==${HOME}", "environment variable references (${...}) are not allowed."),
        ("numpy==1.0 \\\n  -r /etc/passwd", "-r (another requirements file) is not allowed in code/requirements.txt."),
    ],
)
def test_refused_lines(tmp_path: Path, line: str, rule: str) -> None:
    model, code = _model(tmp_path, ["numpy==1.0  # fine", line])
    with pytest.raises(ModelLoadError) as info:
        req.check_requirements(code / "requirements.txt", model, "code/requirements.txt", local_ok=False)
    assert info.value.reason == f"Failed to install code/requirements.txt: line 2: {rule}"
    assert "passwd" not in info.value.reason and "evil" not in info.value.reason


@pytest.mark.parametrize(
    "line",
    [
        "numpy>=1.0,<3 ; python_version >= '3'",
        "--pre",
        "--only-binary=:all:",
        "wheels/a-1.0-py3-none-any.whl",
        "./wheels/a-1.0-py3-none-any.whl --hash=sha256:00",
        "pkg @ https://example.com/pkg-1.0-py3-none-any.whl",
        "git+https://github.com/example/pkg@v1#egg=pkg",
        "# -r /etc/passwd (a comment)",
    ],
)
def test_allowed_lines(tmp_path: Path, line: str) -> None:
    model, code = _model(tmp_path, [line])
    req.check_requirements(code / "requirements.txt", model, "code/requirements.txt", local_ok=False)


def test_local_paths_outside_the_model_with_allow_local(tmp_path: Path) -> None:
    model, code = _model(tmp_path, ["/srv/wheels/pkg-1.0-py3-none-any.whl", "file:///srv/wheels/other.whl"])
    req.check_requirements(code / "requirements.txt", model, "code/requirements.txt", local_ok=True)
    link = code / "wheels"
    link.symlink_to("/etc")  # a link out of the model is outside too
    (code / "requirements.txt").write_text("wheels/pkg-1.0-py3-none-any.whl\n")
    with pytest.raises(ModelLoadError, match="line 1: a local path"):
        req.check_requirements(code / "requirements.txt", model, "code/requirements.txt", local_ok=False)


def test_pip_is_isolated_and_env_settings_become_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--isolated" in req.PIP_FLAGS
    for var in ("PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://a.example/simple file:///srv/index")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    assert req.env_options(local_ok=False) == [
        "--index-url",
        "http://mirror.example/simple",
        "--extra-index-url",
        "http://a.example/simple",
        "--retries",
        "0",
        "--timeout",
        "2",
    ]
    assert "file:///srv/index" in req.env_options(local_ok=True)
