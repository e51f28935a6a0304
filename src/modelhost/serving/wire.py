"""The instance's own HTTP/1.1 server on its unix socket: a bare asyncio Protocol with httptools.

The only client is the router's connection pool, so this replaces uvicorn + ASGI on the per-request
path (profiled in bench/hop.py: uvicorn's request cycle, its task per request and its two writes per
response were most of the instance's own work). A request is handed to ``Dispatch.handle`` whole;
an answer is written in one ``write`` (head and body together). Requests that need more — the
streamed response of InvokeEndpointWithResponseStream — get an ASGI ``receive``/``send`` pair
(``Exchange.asgi``), chunked transfer encoding and flow control.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import httptools

log = logging.getLogger("modelhost.serving.wire")

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 500: b"Internal Server Error"}
_CHUNKED_END = b"0\r\n\r\n"


class Dispatch(Protocol):
    def handle(self, exchange: Exchange) -> None:
        """Answer ``exchange`` (now, or later from a task or callback) through its ``respond``/``asgi``."""


class Exchange:
    """One request on a connection and the means to answer it exactly once."""

    __slots__ = ("conn", "method", "path", "headers", "body", "keep_alive", "done")

    def __init__(
        self, conn: Connection, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes, keep: bool
    ) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.headers = headers  # lower-cased names, in arrival order
        self.body = body
        self.keep_alive = keep
        self.done = False

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The whole answer in one write (Content-Length set here)."""
        if self.done:
            return
        head = [b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, _REASONS.get(status, b"-"), len(body))]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if self.method == b"HEAD":
            body = b""
        self.conn.write(b"".join(head) + body if len(body) < 65536 else b"".join(head))
        if len(body) >= 65536:
            self.conn.write(body)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self.conn.finished(self)

    def asgi(
        self, body_taken: bool = False
    ) -> tuple[Callable[[], Awaitable[MutableMapping[str, Any]]], Callable[[Any], Awaitable[None]]]:
        """ASGI ``receive`` (the body unless ``body_taken``, then ``http.disconnect`` once the peer hangs
        up) and ``send`` (a response without Content-Length goes out chunked)."""
        conn = self.conn
        body_given = body_taken
        state: dict[str, Any] = {"chunked": False, "head": None}

        async def receive() -> MutableMapping[str, Any]:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await conn.lost
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            if self.done or conn.closed:
                return
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                chunked = not any(name.lower() == b"content-length" for name, _ in headers)
                status = message["status"]
                head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"-"))]
                for name, value in headers:
                    head += [name, b": ", value, b"\r\n"]
                if chunked:
                    head.append(b"transfer-encoding: chunked\r\n")
                if not self.keep_alive:
                    head.append(b"connection: close\r\n")
                head.append(b"\r\n")
                state["chunked"], state["head"] = chunked, b"".join(head)  # written with the first body part
                return
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            out = [state["head"]] if state["head"] is not None else []
            state["head"] = None
            if state["chunked"]:
                if body:
                    out += [b"%x\r\n" % len(body), body, b"\r\n"]
                if not more:
                    out.append(_CHUNKED_END)
            elif self.method != b"HEAD":
                out.append(body)
            conn.write(b"".join(out))
            if not more:
                self._finish()
            else:
                await conn.drain()

        return receive, send


class Connection(asyncio.Protocol):
    """One router connection: requests answered in order, one at a time. Reading goes on while one
    is answered, so a hang-up is seen at once (a streamed response stops its generator)."""

    def __init__(self, dispatch: Dispatch, server: InstanceServer) -> None:
        self.dispatch = dispatch
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.busy: Exchange | None = None
        self.queued: collections.deque[Exchange] = collections.deque()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(b"upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._refuse(f"invalid HTTP request: {exc}".encode())

    def pause_writing(self) -> None:
        loop = asyncio.get_running_loop()
        self._writable = loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.partition(b"?")[0]
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        exchange = Exchange(self, self.parser.get_method(), path, self._headers, body, self.parser.should_keep_alive())
        self._url, self._headers, self._body = b"", [], []
        if self.busy is not None:
            self.queued.append(exchange)  # pipelined: answered after the one in progress
            return
        self._start(exchange)

    # answering
    def _start(self, exchange: Exchange) -> None:
        self.busy = exchange
        try:
            self.dispatch.handle(exchange)
        except Exception:
            log.exception("request handling failed")
            exchange.respond(500, [(b"content-type", b"text/plain")], b"internal error in the model server")

    def finished(self, exchange: Exchange) -> None:
        if exchange is not self.busy:
            return
        self.busy = None
        if not exchange.keep_alive or self.server.stopping:
            self.close()
            return
        if self.queued:
            self._start(self.queued.popleft())

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _refuse(self, reason: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(reason), reason)
            )
        self.close()


class InstanceServer:
    """Listen on a unix socket until ``stop()``: then take no new requests, finish those in flight
    (up to ``grace`` seconds), close every connection."""

    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.connections: set[Connection] = set()
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self._stopped = asyncio.Event()

    async def serve(self, uds: str) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: Connection(self.dispatch, self), uds)
        await self._stopped.wait()

    async def stop(self, grace: float = 30.0) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.busy is None:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy is not None for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        self._stopped.set()
