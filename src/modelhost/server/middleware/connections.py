"""The connection-level guard: uvicorn's httptools protocol with three additions (app.serve uses it).

- Open connections are counted per client address; a connection opened past
  ``max_connections_per_client`` gets ``scope[OVER_CONNECTION_LIMIT]`` on its requests, which the
  guard middleware answers with a 503 in the route's protocol and ``connection: close``.
- httptools accepts header sections of any size (a 10 MB header parses): headers past
  ``max_headers + 1`` are dropped (the guard then refuses the request for having too many), and a
  header section still arriving past ``hard_header_bytes`` is answered with a 400
  ``RequestHeaderSectionTooLarge`` and the connection closed, before any more is buffered.
- A response's head and body go out in one write (writes.py).
- Idle keep-alive connections are closed by one timer per server (keep_alive.py), not a timer per response.
- ``POST /endpoints/{name}/invocations`` (and ``/async-invocations``) may skip ASGI altogether: the
  head is offered to the front door's fast path (server/fast_path.py); if it takes the request, the
  body is gathered here and the answer written whole. In uvicorn's ``self.cycle`` the request is then
  a ``_FastCycle``, which has the fields uvicorn reads (so pipelining, disconnects and graceful
  shutdown work as for its own).

Per connection a dict update; per request an integer per header: nothing measurable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol
from urllib.parse import unquote

from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

from modelhost.server.asgi import OVER_CONNECTION_LIMIT, Scope
from modelhost.server.middleware.keep_alive import IdleConnections
from modelhost.server.middleware.limits import Limits
from modelhost.server.middleware.writes import HeldWrites


def _too_large_response(url: bytes, limit: int) -> bytes:
    """A 400 for a header section cut off mid-parse: S3's XML, or JSON for our own routes."""
    message = f"Your request header section exceeds the maximum allowed size ({limit} bytes)."
    if url == b"/" or url.startswith((b"/endpoints/", b"/?", b"/modelhost/")):
        body = json.dumps({"__type": "RequestHeaderSectionTooLarge", "message": message}).encode()
        kind = b"content-type: application/x-amz-json-1.1\r\nx-amzn-errortype: RequestHeaderSectionTooLarge\r\n"
    else:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>RequestHeaderSectionTooLarge</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        kind = b"content-type: application/xml\r\n"
    return (
        b"HTTP/1.1 400 Bad Request\r\n" + kind + b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


FAST_PREFIX = b"/endpoints/"
FAST_SUFFIXES = (b"/invocations", b"/async-invocations")
log = logging.getLogger(__name__)


class FastAnswer(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def body(self) -> bytes: ...


class FastRoute(Protocol):
    """What the protocol needs of the fast path (server/fast_path.FastPath)."""

    body_timeout: float

    def take(self, scope: Scope) -> bool: ...
    async def respond(self, scope: Scope, body: bytes) -> FastAnswer: ...
    def slow_body(self, scope: Scope) -> FastAnswer: ...


class _NoEvent:
    """uvicorn sets its cycle's event on body bytes and on disconnects; nothing waits for a fast one."""

    def set(self) -> None:
        pass


NO_EVENT = _NoEvent()


class _FastCycle:
    __slots__ = (
        "chunks",
        "disconnected",
        "keep_alive",
        "last_body",
        "more_body",
        "response_complete",
        "scope",
        "timer",
    )
    message_event = NO_EVENT

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.chunks: list[bytes] = []
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True
        self.last_body = 0.0
        self.timer: asyncio.TimerHandle | None = None


def _internal_error() -> bytes:
    body = b"Internal Server Error"
    return (
        STATUS_LINE[500]
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )


def guarded_protocol(limits: Limits, fast: FastRoute | None = None) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.run(http=...)``; one per server (its own connection counts).
    ``fast``: the front door's fast path for InvokeEndpoint (None: every request goes through ASGI)."""
    counts: dict[str, int] = {}
    max_connections = limits.max_connections_per_client
    keep_headers = limits.max_headers + 1
    hard_bytes = limits.hard_header_bytes
    idle: IdleConnections | None = None  # made with the first connection (its config's keep-alive timeout)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _over_limit = False
        _header_bytes = 0  # bytes of the header section so far; -1 once it is complete
        _header_count = 0
        _idle: IdleConnections

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            nonlocal idle
            if idle is None:
                idle = IdleConnections(self.timeout_keep_alive)
            self._idle = idle
            super().connection_made(HeldWrites(transport))  # type: ignore[arg-type]  # a response in one write
            if self.client:
                peer = self._peer = self.client[0]
                n = counts[peer] = counts.get(peer, 0) + 1
                self._over_limit = n > max_connections

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self.cycle
            if type(cycle) is _FastCycle and cycle.timer is not None:
                cycle.timer.cancel()
            self._idle.busy(self)
            peer = self._peer
            if peer is not None:
                self._peer = None
                n = counts.get(peer, 1) - 1
                if n > 0:
                    counts[peer] = n
                else:
                    counts.pop(peer, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._header_bytes >= 0:
                self._header_bytes += len(data)
                if self._header_bytes > hard_bytes:
                    self._header_bytes = -1
                    self.transport.write(_too_large_response(getattr(self, "url", b""), hard_bytes))
                    self.transport.close()
                    return
            super().data_received(data)
            cycle = self.cycle
            if type(cycle) is _FastCycle and cycle.more_body and cycle.timer is None and not cycle.response_complete:
                assert fast is not None
                if not cycle.last_body:
                    cycle.last_body = self.loop.time()
                cycle.timer = self.loop.call_later(fast.body_timeout, self._fast_late, cycle)

        def _unset_keepalive_if_required(self) -> None:
            self._idle.busy(self)
            super()._unset_keepalive_if_required()

        def on_response_complete(self) -> None:
            if self.pipeline or self.transport.is_closing():
                super().on_response_complete()  # uvicorn starts the next pipelined request (or nothing)
                return
            # uvicorn's own steps, with the keep-alive timeout left to `idle` instead of a timer of its own
            self.server_state.total_requests += 1
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            self._idle.idle(self, self.loop)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._header_count = 0
            if self._over_limit:
                self.scope[OVER_CONNECTION_LIMIT] = True  # type: ignore[literal-required]

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count <= keep_headers:
                HttpToolsProtocol.on_header(self, name, value)

        def on_headers_complete(self) -> None:
            self._header_bytes = -1
            if fast is not None and self._fast_start():
                return
            super().on_headers_complete()

        def _fast_start(self) -> bool:
            """Whether the fast path takes this request (uvicorn's own path if not)."""
            url: bytes = self.url
            if not (url.startswith(FAST_PREFIX) and url.endswith(FAST_SUFFIXES)) or b"?" in url or b"#" in url:
                return False
            parser = self.parser
            if (
                parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive()
                or self.expect_100_continue
                or parser.should_upgrade()
                or self.limit_concurrency is not None
                or self.root_path
                or not url.isascii()
                or (self.cycle is not None and not self.cycle.response_complete)  # pipelined: uvicorn queues it
            ):
                return False
            scope = self.scope
            path = url.decode("ascii")
            scope["method"] = "POST"
            scope["path"] = unquote(path) if "%" in path else path
            scope["raw_path"] = url
            scope["query_string"] = b""
            assert fast is not None
            try:
                taken = fast.take(scope)  # type: ignore[arg-type]
            except Exception:  # raised inside httptools' callback it would drop the connection: go the ASGI way
                log.exception("Exception in InvokeEndpoint's fast path (the request goes through ASGI)")
                return False
            if not taken:
                return False
            self.cycle = _FastCycle(scope)  # type: ignore[arg-type,assignment]
            return True

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if type(cycle) is _FastCycle:
                if not cycle.response_complete:
                    cycle.chunks.append(body)  # at most InvokeEndpoint's 6 MB: take() checked the length
                    cycle.last_body = self.loop.time()
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            cycle = self.cycle
            if type(cycle) is _FastCycle:
                if cycle.more_body and not cycle.response_complete:
                    cycle.more_body = False
                    if cycle.timer is not None:
                        cycle.timer.cancel()
                    task = self.loop.create_task(self._fast_answer(cycle))
                    task.add_done_callback(self.tasks.discard)
                    self.tasks.add(task)
                return
            super().on_message_complete()

        async def _fast_answer(self, cycle: _FastCycle) -> None:
            assert fast is not None
            try:
                answer = await fast.respond(cycle.scope, b"".join(cycle.chunks))
                data = self._fast_bytes(answer, cycle.keep_alive)
            except Exception:
                log.exception("Exception in InvokeEndpoint's fast path")
                data, cycle.keep_alive = _internal_error(), False
            cycle.response_complete = True
            transport = self.transport
            if transport.is_closing():
                return  # the client has gone
            if self.flow.write_paused:
                await self.flow.drain()
            transport.write_now(data)  # type: ignore[attr-defined]  # HeldWrites
            if not cycle.keep_alive:  # a graceful shutdown began meanwhile
                transport.close()
            self.on_response_complete()

        def _fast_bytes(self, answer: FastAnswer, keep_alive: bool) -> bytes:
            """The response as uvicorn writes it: its default headers (date, server) first."""
            parts = [STATUS_LINE[answer.status]]
            for name, value in self.server_state.default_headers:
                parts += (name, b": ", value, b"\r\n")
            headers = answer.headers
            # The model's Content-Type, say, is never a header injection (one search over every value).
            if HEADER_VALUE_RE.search(b"\t".join([value for _, value in headers])):
                raise RuntimeError("Invalid HTTP header value.")
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
            if not keep_alive:
                parts.append(b"connection: close\r\n")
            parts += (b"\r\n", answer.body)
            return b"".join(parts)

        def _fast_late(self, cycle: _FastCycle) -> None:
            """The slow-body timeout: no body bytes for ``fast.body_timeout`` s cuts the request off."""
            assert fast is not None
            cycle.timer = None
            if not cycle.more_body or cycle.response_complete or self.transport.is_closing():
                return
            quiet = self.loop.time() - cycle.last_body
            if quiet < fast.body_timeout:
                cycle.timer = self.loop.call_later(fast.body_timeout - quiet, self._fast_late, cycle)
                return
            cycle.response_complete = True
            self.transport.write_now(self._fast_bytes(fast.slow_body(cycle.scope), False))  # type: ignore
            self.transport.close()

    return GuardedHttpToolsProtocol
