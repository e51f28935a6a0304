"""The floor of a two-process design: what any front door + instance pair must at least cost.

A reference for bench/hop.py (``--floor``), not a server: a front process that parses each HTTP request
(httptools, as uvicorn does) and relays it over a pooled keep-alive unix-socket connection to an
instance process, which parses it, runs the same model inline as bench/bare_app.py and answers; the
front writes the answer back. No routing, checks, metrics, timeouts or error handling: only the two
processes' parsing, the extra socket hop and their event loops. modelhost's gap to bare Starlette
can be no smaller than this one's.

Run by bench/hop.py as: python bench/relay_floor.py MODEL_JOBLIB PORT
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import tempfile
from typing import Any

import httptools
import joblib
import numpy as np
import uvloop

PR_SET_PDEATHSIG = 1


class Instance(asyncio.Protocol):
    def __init__(self, model: Any) -> None:
        self.model = model
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        text = b"".join(self.body).decode()
        self.body = []
        rows = np.array([[float(v) for v in line.split(",")] for line in text.splitlines() if line])
        out = json.dumps(self.model.predict(rows).tolist()).encode() if len(rows) else b"[]"  # [] for a probe
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out)
        )


class Upstream(asyncio.Protocol):
    """One pooled connection to the instance; one request at a time."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        waiter, self.waiter = self.waiter, None
        self.pool.append(self)
        if waiter is not None:
            waiter.set_result(body)


class Front(asyncio.Protocol):
    def __init__(self, uds: str, pool: list[Upstream]) -> None:
        self.uds = uds
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.loop.create_task(self.relay(body))

    async def relay(self, body: bytes) -> None:
        if self.pool:
            up = self.pool.pop()
        else:
            _, up = await self.loop.create_unix_connection(lambda: Upstream(self.pool), self.uds)
        up.waiter = self.loop.create_future()
        up.transport.write(
            b"POST /invocations HTTP/1.1\r\nhost: i\r\ncontent-type: text/csv\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        out = await up.waiter
        if self.transport.is_closing():  # wrk closed it at the end of its run
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out)
        )


async def serve_instance(model: Any, uds: str) -> None:
    server = await asyncio.get_running_loop().create_unix_server(lambda: Instance(model), uds)
    await server.serve_forever()


async def serve_front(uds: str, port: int) -> None:
    while not os.path.exists(uds):
        await asyncio.sleep(0.05)
    pool: list[Upstream] = []
    server = await asyncio.get_running_loop().create_server(lambda: Front(uds, pool), "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    model = joblib.load(sys.argv[1])
    port = int(sys.argv[2])
    uds = os.path.join(tempfile.mkdtemp(prefix="mh-floor-"), "instance.sock")
    child = os.fork()
    if child == 0:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # ends with the front
        uvloop.run(serve_instance(model, uds))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the finally below runs
    try:
        uvloop.run(serve_front(uds, port))
    finally:
        os.kill(child, 15)


if __name__ == "__main__":
    main()
