"""Request limits and the front door's refusals, each answered in the route's protocol
(JSON 1.1 / rest-json / S3 / STS):

- header section over 16 KiB or 100 headers (guard.Guard): 400 RequestHeaderSectionTooLarge in all four;
  over 256 KiB while still arriving (connections.py, in uvicorn): the same, then the connection closes;
- control-plane / STS body over 1 MiB (guard.Guard): 413 SerializationException / STS 400 InvalidParameterValue;
- no body bytes for ``body_timeout`` seconds (TimedBody): 408 RequestTimeoutException / S3 400 RequestTimeout;
- past the connections per client address (connections.py flags, the guard answers):
  503 ServiceUnavailable / S3 503 SlowDown;
- Host not allowed (hosts.py): 400 ValidationException / ValidationError / S3 InvalidArgument / STS ValidationError;
- unsigned cross-site state change: 403 AccessDeniedException / S3 AccessDenied.

InvokeEndpoint's 6 MiB, InvokeEndpointAsync's 128000 bytes and S3's 5 GiB single PUT are checked
by their handlers (runtime.py, async_runtime.py, s3/app.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from modelhost.config import Settings
from modelhost.errors import ApiError
from modelhost.server import protocols
from modelhost.server.asgi import Message, Receive, Scope, Send

MAX_HEADER_BYTES = 16 * 1024  # names + values + ": " and CRLF each, as common front ends count
MAX_HEADERS = 100
HARD_HEADER_BYTES = 256 * 1024  # past this the connection is answered and closed before parsing ends
MAX_API_BODY = 1024 * 1024  # JSON 1.1 control plane and STS request bodies
BODY_TIMEOUT = 60.0
MAX_CONNECTIONS_PER_CLIENT = 256


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = MAX_HEADER_BYTES
    max_headers: int = MAX_HEADERS
    hard_header_bytes: int = HARD_HEADER_BYTES
    max_api_body: int = MAX_API_BODY
    body_timeout: float = BODY_TIMEOUT
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(body_timeout=settings.body_timeout, max_connections_per_client=settings.max_connections_per_client)


# (status, code) per protocol for each refusal.
Shape = dict[str, tuple[int, str]]
HEADERS_TOO_LARGE: Shape = {
    p: (400, "RequestHeaderSectionTooLarge")
    for p in (protocols.JSON, protocols.REST_JSON, protocols.REST_XML, protocols.QUERY)
}
BAD_HOST: Shape = {
    protocols.JSON: (400, "ValidationException"),
    protocols.REST_JSON: (400, "ValidationError"),
    protocols.REST_XML: (400, "InvalidArgument"),
    protocols.QUERY: (400, "ValidationError"),
}
CROSS_SITE: Shape = {
    protocols.JSON: (403, "AccessDeniedException"),
    protocols.REST_JSON: (403, "AccessDeniedException"),
    protocols.REST_XML: (403, "AccessDenied"),
    protocols.QUERY: (403, "AccessDenied"),
}
BODY_TOO_LARGE: Shape = {
    protocols.JSON: (413, "SerializationException"),
    protocols.REST_JSON: (413, "ValidationError"),
    protocols.REST_XML: (400, "MaxMessageLengthExceeded"),
    protocols.QUERY: (400, "InvalidParameterValue"),
}
SLOW_BODY: Shape = {
    protocols.JSON: (408, "RequestTimeoutException"),
    protocols.REST_JSON: (408, "RequestTimeoutException"),
    protocols.REST_XML: (400, "RequestTimeout"),
    protocols.QUERY: (408, "RequestTimeout"),
}
BUSY: Shape = {
    protocols.JSON: (503, "ServiceUnavailable"),
    protocols.REST_JSON: (503, "ServiceUnavailable"),
    protocols.REST_XML: (503, "SlowDown"),
    protocols.QUERY: (503, "ServiceUnavailable"),
}


class Refused(ApiError):
    """A front-door refusal; code and status are the protocol's (set per instance)."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


async def refuse(
    scope: Scope, receive: Receive, send: Send, shape: Shape, protocol: str, message: str, close: bool = False
) -> None:
    """Answer ``shape``'s error in ``protocol``; ``close`` ends the connection after it (a body was left unread)."""
    status, code = shape.get(protocol, shape[protocols.JSON])
    out = send
    if close:

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        out = closing
    await protocols.send_error(scope, receive, out, Refused(code, status, message), protocol)


def slow_body_message(timeout: float) -> str:
    return (
        "Your socket connection to the server was not read from or written to within the timeout period. "
        f"Idle connections will be closed. (No request body bytes arrived for {timeout:g} s.)"
    )


class BodyWatch:
    """The slow-body watchdog of one server: the bodies whose ``receive`` is waiting, and one task
    that wakes every ``min(1 s, timeout / 4)`` to cut off those waiting longer than ``timeout``.

    Per ``receive``: a clock read and a set add/discard, instead of a timer each; the task runs only
    while something is waiting (it ends when the set is empty and starts again on demand)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.waiting: set[TimedBody] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval = min(1.0, self.timeout / 4)
        while self.waiting:
            await asyncio.sleep(interval)
            late = time.monotonic() - self.timeout
            for body in [b for b in self.waiting if b.since <= late]:
                body.fire()
        self._task = None


class TimedBody:
    """``receive`` with the slow-body timeout: while the body is incomplete, a ``receive`` that waits
    longer than the timeout answers the request (408 / S3 RequestTimeout, connection closed) and
    hands the handler ``http.disconnect``, so it sends nothing and never sees a partial body as whole."""

    __slots__ = ("_fired", "_protocol", "_receive", "_scope", "_send", "_task", "done", "since", "watch")

    def __init__(self, watch: BodyWatch, scope: Scope, receive: Receive, send: Send, protocol: str) -> None:
        self.watch = watch
        self._scope = scope
        self._receive = receive
        self._send = send
        self._protocol = protocol
        self._task: asyncio.Task[object] | None = None
        self._fired = False
        self.since = 0.0  # when the waiting receive began
        self.done = False  # the body is complete (or the request was cut off)

    def fire(self) -> None:
        if not self._fired and self._task is not None:
            self._fired = True
            self._task.cancel()

    async def receive(self) -> Message:
        if self.done:
            if self._fired:
                return {"type": "http.disconnect"}
            return await self._receive()
        watch = self.watch
        self._task = asyncio.current_task()
        self.since = time.monotonic()
        watch.waiting.add(self)
        if watch._task is None:
            watch.start()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._fired:
                raise
            if self._task is not None:
                self._task.uncancel()
            self.done = True
            await refuse(
                self._scope,
                self._receive,
                self._send,
                SLOW_BODY,
                self._protocol,
                slow_body_message(watch.timeout),
                close=True,
            )
            return {"type": "http.disconnect"}
        finally:
            watch.waiting.discard(self)
        if message.get("type") == "http.disconnect" or not message.get("more_body", False):
            self.done = True
        return message
