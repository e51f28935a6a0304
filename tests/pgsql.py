"""A real PostgreSQL server for tests: initdb in a temp dir, one loopback port, stopped by its PID.

Debian's ``postgresql`` package provides the binaries (scripts/setup-system installs it). PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user (setpriv execs, so the
PID we hold is the postmaster's own).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL is not installed: run scripts/setup-system (Debian's postgresql package)")
    return Path(initdb).parent


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


@contextlib.contextmanager
def postgres(databases: tuple[str, ...] = ("modelhost",)) -> Iterator[str]:
    """Yields a SQLAlchemy URL (psycopg 3) of the first database; all of ``databases`` are created."""
    pg = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="mhpg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    subprocess.run(
        _as_user([str(pg / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(root / "postgres.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        _as_user(
            [
                str(pg / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        ready = [str(pg / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        while subprocess.run(ready, capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start:\n{(root / 'postgres.log').read_text()}")
            time.sleep(0.1)
        for name in databases:
            subprocess.run(
                [str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name],
                check=True,
                capture_output=True,
            )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{databases[0]}"
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: clients still connected are cut off
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
