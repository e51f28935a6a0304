"""ASGI types, the scope keys modelhost adds, and the bounded body reader: defined once for server/.

The front door and its middleware put what they learn about a request into the ASGI scope under
``modelhost.*`` keys (the ASGI spec leaves namespaced keys to applications); handlers read them
with the helpers below instead of recomputing them.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Scope keys.
REQUEST_ID = "modelhost.request_id"  # str: the request's x-amzn-requestid (middleware/request_id.py)
CALLER = "modelhost.caller"  # Caller: who signed the request (middleware/auth.py)
ROUTE = "modelhost.route"  # Route: the front door's choice (front_door.py)
ENDPOINT = "modelhost.endpoint"  # str: the endpoint name in /endpoints/{name}/... (front_door.py)
# Present only on a connection past its client address's connection limit (middleware/connections.py).
OVER_CONNECTION_LIMIT = "modelhost.over_connection_limit"


def new_request_id() -> str:
    """A random (version 4) UUID as text, as AWS request ids are. From ``random``, not the OS: an id
    needs to be unique, not secret, and a system call per request cost more than the rest of this. The
    module's generator, which Python seeds afresh in a forked child (``serve --workers``)."""
    h = f"{random.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def request_id(scope: Scope) -> str:
    """The request's id: the one the request-id middleware set, or a new one (then kept in scope)."""
    rid: str | None = scope.get(REQUEST_ID)
    if rid is None:
        rid = scope[REQUEST_ID] = new_request_id()
    return rid


class BodyTooLarge(Exception):
    """The request body went over ``limit`` bytes; ``size`` is how much had arrived by then."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"Request body exceeds the maximum of {limit} bytes (received {size} so far).")
        self.size = size
        self.limit = limit


class Disconnected(Exception):
    """The client went away (or was cut off by the slow-body timeout, already answered) mid-body:
    the handler sends nothing."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (BodyTooLarge) as soon as it passes ``limit`` bytes.

    A disconnect before the body's end raises Disconnected (a partial body is never handed on)."""
    message = await receive()
    if message.get("type") == "http.disconnect":
        raise Disconnected
    chunk: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the common case: one message
        if len(chunk) > limit:
            raise BodyTooLarge(len(chunk), limit)
        return chunk
    chunks = [chunk] if chunk else []
    size = len(chunk)
    while True:
        if size > limit:
            raise BodyTooLarge(size, limit)
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise BodyTooLarge(size, limit)
    return b"".join(chunks)


__all__ = [
    "ASGIApp",
    "CALLER",
    "ENDPOINT",
    "OVER_CONNECTION_LIMIT",
    "REQUEST_ID",
    "ROUTE",
    "BodyTooLarge",
    "Disconnected",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "new_request_id",
    "read_body",
    "request_id",
]
