"""The connection-level guard: uvicorn's httptools protocol with three additions (app.serve uses it).

- Open connections are counted per client address; a connection opened past
  ``max_connections_per_client`` gets ``scope[OVER_CONNECTION_LIMIT]`` on its requests, which the
  guard middleware answers with a 503 in the route's protocol and ``connection: close``.
- httptools accepts header sections of any size (a 10 MB header parses): headers past
  ``max_headers + 1`` are dropped (the guard then refuses the request for having too many), and a
  header section still arriving past ``hard_header_bytes`` is answered with a 400
  ``RequestHeaderSectionTooLarge`` and the connection closed, before any more is buffered.
- A response's head and body go out in one write (writes.py).

Per connection a dict update; per request an integer per header: nothing measurable.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelhost.server.asgi import OVER_CONNECTION_LIMIT
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


def guarded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.run(http=...)``; one per server (its own connection counts)."""
    counts: dict[str, int] = {}
    max_connections = limits.max_connections_per_client
    keep_headers = limits.max_headers + 1
    hard_bytes = limits.hard_header_bytes

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _over_limit = False
        _header_bytes = 0  # bytes of the header section so far; -1 once it is complete
        _header_count = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(HeldWrites(transport))  # type: ignore[arg-type]  # a response in one write
            if self.client:
                peer = self._peer = self.client[0]
                n = counts[peer] = counts.get(peer, 0) + 1
                self._over_limit = n > max_connections

        def connection_lost(self, exc: Exception | None) -> None:
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
            super().on_headers_complete()

    return GuardedHttpToolsProtocol
