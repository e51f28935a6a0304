"""Fixtures: one real server per test module (tests in a module must not interfere)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Server, moto_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mh") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sm(server: Server):  # type: ignore[no-untyped-def]
    return server.clients()[0]


@pytest.fixture(scope="module")
def rt(server: Server):  # type: ignore[no-untyped-def]
    return server.clients()[1]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server for the module (a real S3-compatible service), stopped by its PID afterwards."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url
