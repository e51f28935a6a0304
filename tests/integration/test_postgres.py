"""Metadata on PostgreSQL (--database-url): the Alembic migrations and the existing store, driven by an
existing integration module run unchanged against a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.helpers import Server
from tests.pgsql import postgres

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests/integration/test_control_plane.py"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres(("modelhost", "other")) as url:
        yield url


def test_control_plane_module_runs_on_postgres(pg_url: str) -> None:
    """tests/integration/test_control_plane.py (models, configs, endpoints, listing and pagination, tags,
    errors, failed deployments) unchanged, with every server's metadata in PostgreSQL."""
    env = {**os.environ, "MODELHOST_DB_URL": pg_url}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", MODULE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    tables = set(inspect(create_engine(pg_url)).get_table_names())
    assert {"models", "endpoint_configs", "endpoints", "alembic_version"} <= tables


def test_plain_postgresql_url_and_bad_urls(pg_url: str, tmp_path: Path) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/other"
    srv = Server(tmp_path / "a", env={"MODELHOST_DB_URL": plain}).start()
    try:
        sm, _ = srv.clients()
        assert sm.list_endpoints()["Endpoints"] == []
    finally:
        srv.stop()
    # Nothing listens there: a clear one-line error and exit status 2, not a traceback.
    dead = plain.rsplit(":", 1)[0] + ":1/other"
    for url, words in ((dead, "--database-url postgresql://postgres@127.0.0.1:1/other"), ("nosuch://x", "nosuch")):
        done = subprocess.run(
            [sys.executable, "-m", "modelhost.cli", "serve", "--data-dir", str(tmp_path / "b"), "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "error:" in done.stderr and words in done.stderr and "Traceback" not in done.stderr
