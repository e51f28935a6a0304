"""InvokeEndpoint (and InvokeEndpointAsync) without ASGI: the front door's fast path for its hottest requests.

The uvicorn protocol (middleware/connections.py) offers here the head of every ``POST
/endpoints/{name}/invocations`` and ``.../async-invocations`` it parses. ``take`` accepts only a
request the ASGI stack would hand to one of those routes untouched: the front door's own route
choice (``FrontDoor.route``), none of the guard's refusals (``Guard.check``), a body of known length
(or none) within InvokeEndpoint's limit, and a well-formed signature or none. Everything else — a
refusal, a chunked body, a malformed ``Authorization`` — goes the ASGI way, so every refusal keeps
its one implementation there.

Once the body has arrived, ``respond`` does what the four middleware and the handler do, as plain
calls: the request id (``take``), SigV4 verification and authorization when a credentials file is
configured (``Authenticate.verify_whole``: the same checks over the same bytes), the handler
(``Invocations.answer``; InvokeEndpointAsync's raw ASGI app through ``asgi_answer``) and the
request counter. Profiled on InvokeEndpoint (bench/hop.py), the middleware's wrapped sends and
uvicorn's per-request cycle were a quarter of the front door's CPU.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from modelhost.errors import ApiError
from modelhost.security import AccessDenied, AuthFailure
from modelhost.server import protocols
from modelhost.server.asgi import CALLER, REQUEST_ID, ROUTE, ASGIApp, Message, Receive, Scope, Send, new_request_id
from modelhost.server.front_door import FrontDoor
from modelhost.server.middleware import metrics
from modelhost.server.middleware.auth import Authenticate, IncompleteSignature, authenticate, denial, refusal
from modelhost.server.middleware.guard import AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING, Guard
from modelhost.server.middleware.limits import SLOW_BODY, Refused, slow_body_message
from modelhost.server.runtime import MAX_BODY, Answer, Invocations, error_answer

Responder = Callable[[Scope, bytes], Awaitable[Answer]]


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the fast path calls the guard's and authentication's checks, never their app")


async def asgi_answer(app: ASGIApp, scope: Scope, body: bytes) -> Answer:
    """A raw ASGI app's whole answer to a request whose whole body is ``body``."""
    given = False
    start: Message = {}
    parts: list[bytes] = []

    async def receive() -> Message:
        nonlocal given
        if given:
            return {"type": "http.disconnect"}
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    if not start:
        raise RuntimeError("the app answered nothing")
    return Answer(start["status"], list(start.get("headers") or []), b"".join(parts))


class FastPath:
    def __init__(
        self,
        front_door: FrontDoor,
        guard: Guard,
        auth: Authenticate,
        invocations: Invocations,
        async_invocations: ASGIApp,
    ) -> None:
        self.front_door = front_door
        self.guard = guard
        self.auth = auth
        # Route name -> its answer to a request whose body has arrived.
        self.responders: dict[str, Responder] = {
            "invoke": invocations.answer,
            "invoke-async": partial(asgi_answer, async_invocations),
        }
        self.body_timeout = guard.limits.body_timeout

    @classmethod
    def build(
        cls,
        front_door: FrontDoor,
        guard: Callable[[ASGIApp], Guard],
        auth: Callable[[ASGIApp], Authenticate],
        invocations: Invocations,
        async_invocations: ASGIApp,
    ) -> FastPath:
        """From the middleware factories the stack was built with (their checks, configured the same)."""
        return cls(front_door, guard(_no_app), auth(_no_app), invocations, async_invocations)

    def take(self, scope: Scope) -> bool:
        """Whether this request goes the fast way (its head parsed: method, path and headers in ``scope``)."""
        route = self.front_door.route(scope)
        if route.name not in self.responders:
            return False
        found: list[bytes | None] = [None, None, None, None, None, None]
        if self.guard.check(scope, found) is not None or found[TRANSFER_ENCODING] is not None:
            return False
        length = found[CONTENT_LENGTH]
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return False  # the handler's own refusal, the ASGI way
        if self.auth.security is None:
            header = None
            if found[AUTHORIZATION] is not None:
                for name, value in scope["headers"]:  # the first one, as Authenticate reads it
                    if name == b"authorization":
                        header = value.decode("latin-1")
                        break
            try:
                scope[CALLER] = authenticate(header, protocols.REST_JSON)
            except IncompleteSignature:
                return False
        scope[ROUTE] = route
        scope[REQUEST_ID] = new_request_id()
        return True

    async def respond(self, scope: Scope, body: bytes) -> Answer:
        """The answer to a request ``take`` accepted, once its whole body is here."""
        if self.auth.security is not None:
            try:
                self.auth.verify_whole(scope, body)
            except AuthFailure as failure:
                return self._refused(scope, refusal(failure, protocols.REST_JSON))
            except AccessDenied as err:
                return self._refused(scope, denial(err, protocols.REST_JSON))
        name = scope[ROUTE].name
        answer = await self.responders[name](scope, body)
        metrics.count(name, answer.status)
        return answer

    def slow_body(self, scope: Scope) -> Answer:
        """The answer to a body that stopped arriving for the slow-body timeout (the connection then closes)."""
        status, code = SLOW_BODY[protocols.REST_JSON]
        return self._refused(scope, Refused(code, status, slow_body_message(self.body_timeout)))

    def _refused(self, scope: Scope, err: ApiError) -> Answer:
        answer = error_answer(err, scope[REQUEST_ID])
        metrics.count(scope[ROUTE].name, answer.status)
        return answer
