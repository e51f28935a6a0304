"""Authentication, for every route: who signed the request goes into ``scope[CALLER]``.

Today any well-formed SigV4 ``Authorization`` header (or none, for curl and health checks; or a
presigned query; or SigV2 on S3) is accepted: credentials are not checked yet. Signature
verification slots in here (see reference section 1.2) without touching the routes. A malformed
header is refused with ``IncompleteSignatureException`` (403) in the route's protocol.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from modelhost.errors import ApiError
from modelhost.server import protocols
from modelhost.server.asgi import CALLER, ROUTE, ASGIApp, Receive, Scope, Send

SIGV4 = "AWS4-HMAC-SHA256 "


class IncompleteSignature(ApiError):
    code = "IncompleteSignatureException"
    status = 403


class Caller(NamedTuple):
    access_key: str | None  # None: an unsigned request
    region: str | None


ANONYMOUS = Caller(None, None)


def authenticate(header: str | None, protocol: str = protocols.JSON, query: bytes = b"") -> Caller:
    """The caller named by an ``Authorization`` header value (or a presigned S3 query)."""
    if header is None:
        if protocol == protocols.REST_XML and (b"X-Amz-Credential=" in query or b"AWSAccessKeyId=" in query):
            return _presigned(query)
        return ANONYMOUS
    if not header.startswith(SIGV4):
        if protocol == protocols.REST_XML and header.startswith("AWS ") and ":" in header:
            return Caller(header[4:].split(":", 1)[0].strip(), None)  # SigV2, S3's alone
        raise IncompleteSignature("Authorization header requires the AWS4-HMAC-SHA256 scheme.")
    credential: list[str] = []
    signed_headers = signature = False
    for part in header[len(SIGV4) :].split(","):  # (on the hot path: no dict, no regex)
        part = part.strip()
        if part.startswith("Credential="):
            credential = part[11:].split("/")
        elif part.startswith("SignedHeaders="):
            signed_headers = True
        elif part.startswith("Signature="):
            signature = True
    if len(credential) != 5 or not signed_headers or not signature:
        raise IncompleteSignature(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."
        )
    return Caller(credential[0], credential[2])


def _presigned(query: bytes) -> Caller:
    params = dict(parse_qsl(query.decode("latin-1")))
    credential = params.get("X-Amz-Credential", "").split("/")
    if len(credential) == 5:
        return Caller(credential[0], credential[2])
    if "AWSAccessKeyId" in params:
        return Caller(params["AWSAccessKeyId"], None)
    return ANONYMOUS


class Authenticate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        protocol = scope[ROUTE].protocol
        try:
            scope[CALLER] = authenticate(header, protocol, scope.get("query_string", b""))
        except IncompleteSignature as err:
            await protocols.send_error(scope, receive, send, err, protocol)
            return
        await self.app(scope, receive, send)
