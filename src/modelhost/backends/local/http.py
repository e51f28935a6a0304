"""A small keep-alive HTTP/1.1 client over a unix socket: the router-to-instance hop.

This is the hottest path in the server, so it is a plain asyncio Protocol with httptools (the
parser uvicorn uses) instead of a general-purpose client: measured in bench/realtime.py, aiohttp's
client cost more per request than everything else on the front door together.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import AsyncIterator

import httptools


class ConnectError(Exception):
    """The instance could not be reached; nothing was sent, so retrying elsewhere is safe."""


class NotDelivered(ConnectError):
    """The instance closed the connection without reading the request (so it never ran it):
    retrying is safe. See ``_Connection.connection_lost``."""


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


class _ResponseProtocol(asyncio.Protocol):
    """What both connection kinds share: the transport and feeding httptools' response parser."""

    transport: asyncio.Transport | None
    parser: httptools.HttpResponseParser

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"invalid HTTP response from the instance: {exc}"))
            self.close()

    def _fail(self, exc: Exception) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _Connection(_ResponseProtocol):
    def __init__(self, pool: UnixHttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.closed = False
        self.reused = False  # taken from the idle list (it has answered a request before)
        self.answered = False  # response bytes of the current request have arrived
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.answered = True
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """A unix stream socket whose peer is closed (or dies) while bytes we sent are still unread
        in its receive queue reports ECONNRESET to us (Linux ``unix_release_sock``), and a write
        after the peer is gone fails with EPIPE; a peer that read the request and then went away
        reports a plain EOF. So a reset or broken pipe before any response byte means the instance
        never read the request (an idle keep-alive connection closed as it was reused, a request
        queued on a killed instance): NotDelivered, safe to send again. An EOF is a real loss."""
        self.closed = True
        self.pool.forget(self)
        if not self.answered and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self._fail(NotDelivered("the instance closed the connection before reading the request"))
        else:
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
        # In flight: when each request times out. One sweep timer for all of them, not a timer per
        # request (uvloop's call_later + cancel is ~4 µs, a tenth of the front door's own work on one).
        self._deadlines: dict[_Connection, float] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf

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
            if conn.closed:
                continue
            if conn.transport is None or conn.transport.is_closing():
                conn.close()  # EOF already seen, connection_lost still pending: never write to it
                continue
            conn.reused = True
            return conn
        return await self._connect()

    async def _connect(self) -> _Connection:
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
        """One exchange. A reused connection that turns out closed before the instance read the
        request is retried once on a fresh connection; NotDelivered (a ConnectError) when even
        that is not read, ConnectionLost when the instance read it and went away."""
        conn = await self._acquire()
        if not conn.reused:
            return await self._exchange(conn, method, path, headers, body, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            return await self._exchange(conn, method, path, headers, body, timeout)
        except NotDelivered:
            pass
        return await self._exchange(await self._connect(), method, path, headers, body, deadline - loop.time())

    async def _exchange(
        self,
        conn: _Connection,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> HttpResponse:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        conn.waiter = waiter
        conn.answered = False
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
        deadline = loop.time() + timeout
        self._deadlines[conn] = deadline
        if deadline + SWEEP_INTERVAL < self._sweep_at:
            self._arm(loop, deadline)
        try:
            return await waiter
        finally:
            self._deadlines.pop(conn, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep, self._sweep_at = loop.call_at(when, self._expire_due, loop), when

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the requests past their deadline; the next sweep at the soonest deadline left, but
        at most one per SWEEP_INTERVAL (so a request times out up to that much late)."""
        self._sweep, self._sweep_at = None, math.inf
        now = loop.time()
        for conn, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[conn]
                _expire(conn)
        if self._deadlines:
            self._arm(loop, max(min(self._deadlines.values()), now + SWEEP_INTERVAL))

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep, self._sweep_at = None, math.inf
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


SWEEP_INTERVAL = 0.1  # seconds: how late a request's timeout may fire


def _expire(conn: _Connection) -> None:
    waiter, conn.waiter = conn.waiter, None
    if waiter is not None and not waiter.done():
        waiter.set_exception(RequestTimeout())
    conn.close()  # the response may still come; this connection is no longer usable


# --- streaming: asynchronous inference moves payloads of up to 1 GB through the server -----------

STREAM_HIGH_WATER = 8 * 1024 * 1024  # response bytes buffered before the socket stops being read
STREAM_LOW_WATER = 1024 * 1024


class _StreamConnection(_ResponseProtocol):
    """One request on its own connection: the body is written piece by piece with flow
    control, and the response body is handed out piece by piece (reading pauses while the
    consumer lags), so neither is ever held whole."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[tuple[int, dict[bytes, bytes]]] = loop.create_future()
        self.headers: dict[bytes, bytes] = {}
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.done = False
        self.error: Exception | None = None
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self._fail(ConnectionLost("the instance closed the connection"))
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result((self.parser.get_status_code(), self.headers))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self.readable.set()
        if self.buffered > STREAM_HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.done = True
        self.readable.set()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        if not self.head.done():
            self.head.set_exception(exc)
        self.readable.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class StreamedResponse:
    """Status and headers of a streamed exchange; ``chunks()`` yields the body, then
    ``close()`` (always) releases the connection."""

    def __init__(self, conn: _StreamConnection, status: int, headers: dict[bytes, bytes]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # lower-cased names

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            while conn.chunks:
                chunk = conn.chunks.popleft()
                conn.buffered -= len(chunk)
                if conn.paused and conn.buffered < STREAM_LOW_WATER and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                yield chunk
            if conn.done:
                return
            if conn.error is not None:
                raise conn.error
            conn.readable.clear()
            await conn.readable.wait()

    async def read_all(self, limit: int) -> bytes:
        """The body (for error answers), keeping at most ``limit`` bytes."""
        kept: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            if size < limit:
                kept.append(chunk[: limit - size])
                size += len(kept[-1])
        return b"".join(kept)

    def close(self) -> None:
        self._conn.close()


async def stream_request(
    path: str,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int,
    body: AsyncIterator[bytes],
) -> StreamedResponse:
    """Send a request whose body (``length`` bytes) comes from ``body`` over a fresh connection
    to the unix socket ``path``, and return once the response headers have arrived. A connect
    failure is ConnectError (nothing sent). The caller bounds the time (``asyncio.wait_for``);
    cancelling closes the connection."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_unix_connection(_StreamConnection, path)
    except OSError as exc:
        raise ConnectError(f"cannot connect to the instance: {exc}") from None
    try:
        head = [
            method,
            b" ",
            target,
            b" HTTP/1.1\r\nhost: instance\r\nconnection: close\r\ncontent-length: ",
            str(length).encode(),
            b"\r\n",
        ]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        assert conn.transport is not None
        conn.transport.write(b"".join(head))
        async for chunk in body:
            if conn.error is not None or conn.head.done():
                break  # the instance answered (or failed) before taking the whole body
            conn.transport.write(chunk)
            if not conn.writable.is_set():
                await conn.writable.wait()
        status, response_headers = await conn.head
    except BaseException:
        conn.close()
        raise
    return StreamedResponse(conn, status, response_headers)
