"""The front door's cheap refusals, before authentication (one pass over the headers, then a few
dict lookups; see limits.py for every limit and its answer):

1. a connection past its client address's connection limit (flagged by connections.py) → 503;
2. more than 100 headers or 16 KiB of them → 400 RequestHeaderSectionTooLarge;
3. a ``Host`` this server does not answer to (DNS rebinding; hosts.py) → 400 naming the host;
4. a browser-style cross-site request that changes state (not GET/HEAD) without a signature:
   an ``Origin`` that is not an allowed host, or ``Sec-Fetch-Site: cross-site``, and neither an
   ``Authorization`` header nor a presigned query → 403. Signed requests pass: a browser cannot
   sign without the secret key, and signature checks are Authenticate's;
5. request bodies: JSON 1.1 and STS bodies over 1 MiB → refused from Content-Length at once (or
   as soon as a chunked body passes it); every body is read under the slow-body timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelhost.server import protocols
from modelhost.server.asgi import OVER_CONNECTION_LIMIT, ROUTE, ASGIApp, Message, Receive, Scope, Send
from modelhost.server.middleware.hosts import HostPolicy, presigned
from modelhost.server.middleware.limits import (
    BAD_HOST,
    BODY_TOO_LARGE,
    BUSY,
    CROSS_SITE,
    HEADERS_TOO_LARGE,
    BodyWatch,
    Limits,
    Shape,
    TimedBody,
    refuse,
)

# Header name -> slot in the one pass over the headers.
HOST, ORIGIN, FETCH_SITE, AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING = range(6)
WATCHED = {
    b"host": HOST,
    b"origin": ORIGIN,
    b"sec-fetch-site": FETCH_SITE,
    b"authorization": AUTHORIZATION,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
}
SAFE_METHODS = ("GET", "HEAD")
BUFFERED = (protocols.JSON, protocols.QUERY)  # small bodies, read whole here under the limit


@dataclass(frozen=True)
class Refusal:
    """What the guard answers instead of the request (always closing the connection after it)."""

    shape: Shape
    message: str


def _text(value: bytes, limit: int = 200) -> str:
    text = value.decode("latin-1")
    return text if len(text) <= limit else text[:limit] + "..."


class Guard:
    def __init__(self, app: ASGIApp, hosts: HostPolicy | None = None, limits: Limits | None = None) -> None:
        self.app = app
        self.hosts = hosts if hosts is not None else HostPolicy()
        self.limits = limits if limits is not None else Limits()
        self.bodies = BodyWatch(self.limits.body_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: list[bytes | None] = [None, None, None, None, None, None]
        refusal = self.check(scope, found)
        if refusal is not None:
            await refuse(scope, receive, send, refusal.shape, scope[ROUTE].protocol, refusal.message, close=True)
            return
        length = found[CONTENT_LENGTH]
        if found[TRANSFER_ENCODING] is None and (length is None or length == b"0"):
            await self.app(scope, receive, send)  # no body
            return
        protocol = scope[ROUTE].protocol
        body = TimedBody(self.bodies, scope, receive, send, protocol)
        if protocol in BUFFERED:
            await self._buffered(scope, body, send, protocol, length)
            return
        await self.app(scope, body.receive, send)

    def check(self, scope: Scope, found: list[bytes | None]) -> Refusal | None:
        """Checks 1-4 of the module's list on an HTTP request's head: the refusal to answer, or None.
        ``found`` (six slots) gets the watched headers' values (the body checks and the fast path use them)."""
        limits = self.limits
        headers = scope["headers"]
        if OVER_CONNECTION_LIMIT in scope:
            client = scope.get("client") or ("?",)
            return Refusal(
                BUSY,
                f"Too many open connections from {client[0]}: the limit is {limits.max_connections_per_client} per "
                "client address (MODELHOST_MAX_CONNECTIONS_PER_CLIENT). Please reduce your request rate; "
                "close idle connections and retry.",
            )
        size = 0
        watched = WATCHED
        for name, value in headers:
            size += len(name) + len(value)
            slot = watched.get(name)
            if slot is not None:
                found[slot] = value
        size += 4 * len(headers)  # ": " and CRLF
        if len(headers) > limits.max_headers or size > limits.max_header_bytes:
            return Refusal(
                HEADERS_TOO_LARGE,
                f"Your request header section exceeds the maximum allowed size: {len(headers)} headers, {size} "
                f"bytes (the limits are {limits.max_headers} headers and {limits.max_header_bytes} bytes).",
            )
        host = found[HOST]
        if host is not None and not self.hosts.allows(host):
            return Refusal(
                BAD_HOST,
                f"Host '{_text(host)}' is not a host name this server answers to (loopback names, "
                "*.localhost and the bind address; add names with --allowed-hosts or MODELHOST_ALLOWED_HOSTS).",
            )
        if (found[ORIGIN] is not None or found[FETCH_SITE] is not None) and scope["method"] not in SAFE_METHODS:
            reason = self._cross_site(scope, found)
            if reason is not None:
                return Refusal(
                    CROSS_SITE,
                    f"Cross-site request refused: {reason}, and the request is not signed. Requests that change "
                    "state from a web page must be signed with AWS Signature Version 4.",
                )
        return None

    def _cross_site(self, scope: Scope, found: list[bytes | None]) -> str | None:
        """Why a state-changing request is a refused cross-site one (None: it is not)."""
        if found[AUTHORIZATION] is not None or presigned(scope.get("query_string", b"")):
            return None
        origin = found[ORIGIN]
        if origin is not None and not self.hosts.allows_origin(origin):
            return f"Origin '{_text(origin)}' is not an allowed host"
        if found[FETCH_SITE] == b"cross-site":
            return "Sec-Fetch-Site is cross-site"
        return None

    async def _buffered(self, scope: Scope, body: TimedBody, send: Send, protocol: str, length: bytes | None) -> None:
        """Read a JSON 1.1 / STS body whole (at most max_api_body bytes), then hand it on."""
        limit = self.limits.max_api_body
        if length is not None and length.isdigit() and int(length) > limit:
            message = f"Request body is {int(length)} bytes; the maximum for this API is {limit} bytes (1 MiB)."
            await refuse(scope, body.receive, send, BODY_TOO_LARGE, protocol, message, close=True)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message_in = await body.receive()
            if message_in.get("type") == "http.disconnect":
                return  # gone, or already answered by the slow-body timeout
            chunk = message_in.get("body", b"")
            size += len(chunk)
            if size > limit:
                message = f"Request body exceeds the maximum for this API of {limit} bytes (1 MiB)."
                await refuse(scope, body.receive, send, BODY_TOO_LARGE, protocol, message, close=True)
                return
            if chunk:
                chunks.append(chunk)
            if not message_in.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await body.receive()

        await self.app(scope, replay, send)
