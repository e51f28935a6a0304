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

from tests.helpers import Server, stored_object
from tests.pgsql import postgres

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests/integration/test_control_plane.py"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres(("modelhost", "other", "queue")) as url:
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


def test_async_queue_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """The async queue's statements (run on the driver's cursor, hosting/asyncq/sql.py) on psycopg:
    accepts sharing transactions, bodies in the rows, claims and completions, all answered once."""
    import asyncio

    from modelhost.hosting.asyncq import AsyncInference
    from modelhost.hosting.router import Router
    from modelhost.store.db import MetadataStore
    from tests.unit.stream_fakes import (
        BUCKET,
        StreamFleet,
        StreamReplica,
        async_config,
        endpoint_record,
        env,
        insert_endpoint,
        publish,
    )

    settings, _, _, blobs = env(tmp_path)
    store = MetadataStore(pg_url.replace("/modelhost", "/queue"))  # (its own database)
    insert_endpoint(store, endpoint_record("pg-ep", async_config("pg-ep", 4)))
    inst = StreamReplica("v/0", delay=0)

    async def main() -> None:
        router = Router(1)
        q = AsyncInference(settings, store, blobs, router)
        await q.start()
        try:
            await asyncio.gather(*(q.submit("pg-ep", {"InferenceId": f"pg-{i}"}, b"pg-%d" % i) for i in range(40)))
            publish(router, "pg-ep", StreamFleet([inst]))
            q.dispatcher.wake()
            for _ in range(1000):
                if q.backlog("pg-ep") == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            await q.stop()

    asyncio.run(main())
    with store.begin() as conn:
        rows = conn.exec_driver_sql("SELECT inference_id, status, body FROM async_requests ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [f"pg-{i}" for i in range(40)]
    assert {r[1] for r in rows} == {"Completed"} and all(r[2] is None for r in rows)
    assert sorted(inst.seen) == sorted(b"pg-%d" % i for i in range(40))
    for i in range(40):
        # a small output is kept inline in the bucket index (store/buckets): read it as the store does
        assert stored_object(settings.buckets_dir.parent, f"s3://{BUCKET}/pg-ep/pg-{i}.out") == b"PG-%d" % i
