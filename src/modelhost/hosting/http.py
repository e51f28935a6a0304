"""A small keep-alive HTTP/1.1 client over a unix socket: the router-to-instance hop.

This is the hottest path in the server, so it is a plain asyncio Protocol with httptools (the
parser uvicorn uses) instead of a general-purpose client: measured in bench/realtime.py, aiohttp's
client cost more per request than everything else on the front door together.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools


class ConnectError(Exception):
    """The instance could not be reached; nothing was sent, so retrying elsewhere is safe."""


class ConnectionLost(Exception):
    """The instance went away while the request was in flight."""


class RequestTimeout(Exception):
    pass


class HttpResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UnixHttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.closed = False
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"invalid HTTP response from the instance: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._fail(ConnectionLost("the instance closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        response = HttpResponse(self.parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if not self.parser.should_keep_alive():
            self.close()
        else:
            self.pool.release(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()


class UnixHttpPool:
    """Keep-alive connections to one instance's socket; one request per connection at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def release(self, conn: _Connection) -> None:
        if not conn.closed:
            self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_unix_connection(lambda: _Connection(self), self.path)
        except OSError as exc:
            raise ConnectError(f"cannot connect to the instance: {exc}") from None
        self._all.add(conn)
        return conn

    async def request(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> HttpResponse:
        conn = await self._acquire()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        conn.waiter = waiter
        head = [
            method,
            b" ",
            path,
            b" HTTP/1.1\r\nhost: instance\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        assert conn.transport is not None
        conn.transport.write(b"".join(head) + body if len(body) < 65536 else b"".join(head))
        if len(body) >= 65536:
            conn.transport.write(body)
        timer = loop.call_later(timeout, _expire, waiter, conn)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Any], conn: _Connection) -> None:
    if not waiter.done():
        waiter.set_exception(RequestTimeout())
        conn.waiter = None
        conn.close()  # the response may still come; this connection is no longer usable
