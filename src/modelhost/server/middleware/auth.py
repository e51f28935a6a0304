"""Authentication, for every route: who signed the request goes into ``scope[CALLER]``.

Without a credentials file (``Authenticate(app)``): any well-formed SigV4 ``Authorization`` header
(or none; or a presigned query; or SigV2 on S3) is accepted and only parsed; a malformed one is
refused with ``IncompleteSignatureException`` (400) in the route's protocol.

With one (``Authenticate(app, security)``), every request except ``GET /ping`` must be signed by a
key in the file (security/sigv4.py verifies it with botocore's signing code) before any handler
runs: the other services' bodies (control plane, runtime, STS: bounded) are read and hashed here
and handed on as they came; S3's ``x-amz-content-sha256`` is checked against the body as the S3
app reads it (a wrapped ``receive``), and aws-chunked chunk signatures as they are decoded
(``scope[CHUNK_SIGNER]``). The runtime, the logs route and ``/metrics`` are authorized here
(their action is known from the route); the control plane and S3 authorize where they know the
operation (``server/access.authorize``). Accepted mutating calls are written to the audit log
when their answer starts. Refusals are worded as the route's service words them. The web console's
route is checked by its session cookie instead (security/sessions.py): a valid one puts its key in
``scope[CALLER]``, anything else leaves the caller anonymous and the console asks for a login.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qsl

from modelhost.errors import ApiError, ValidationError
from modelhost.security import AccessDenied, AuditLog, AuthFailure, Verifier, is_mutating, sigv4
from modelhost.security.sessions import COOKIE, Sessions
from modelhost.server import protocols
from modelhost.server.access import AUTHORIZED, CHUNK_SIGNER, Caller, authorize
from modelhost.server.asgi import CALLER, ENDPOINT, ROUTE, ASGIApp, Message, Receive, Scope, Send, request_id
from modelhost.store.buckets import error_class

SIGV4 = "AWS4-HMAC-SHA256 "
MAX_SIGNED_BODY = 6 * 1024 * 1024  # the bodies read here to hash them: InvokeEndpoint's limit (6 MB)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
S3_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)
INVALID_TOKEN = "The security token included in the request is invalid."
TARGET_SERVICES = {
    "SageMaker": "sagemaker",
    "AnyScaleFrontendService": "application-autoscaling",
    "Logs_20140328": "logs",
}
LOGS_PREFIX = "/modelhost/endpoints/"
FUNCTION_LOGS_PREFIX = "/modelhost/functions/"
CONSOLE_ROUTE = "console"  # the front door's route name of the web console (server/build.py)
LOGS_SUFFIX = "/logs"

XAmzContentSHA256Mismatch = error_class("XAmzContentSHA256Mismatch")


class IncompleteSignature(ApiError):
    code = "IncompleteSignatureException"
    status = 400


def _error(code: str, status: int, message: str) -> ApiError:
    err = ApiError(message)
    err.code = code
    err.status = status
    return err


def refusal(failure: AuthFailure, protocol: str) -> ApiError:
    """An authentication failure as the route's service answers it."""
    kind, detail = failure.kind, failure.detail
    if protocol == protocols.REST_XML:
        return _s3_refusal(kind, detail)
    query = protocol == protocols.QUERY
    if kind == sigv4.MISSING:
        if query:
            return _error("MissingAuthenticationToken", 403, "Request is missing Authentication Token")
        return _error("MissingAuthenticationTokenException", 403, "Missing Authentication Token")
    if kind in (sigv4.INCOMPLETE, sigv4.SIGV2):
        return _error("IncompleteSignature" if query else "IncompleteSignatureException", 400, detail)
    if kind in (sigv4.UNKNOWN_KEY, sigv4.BAD_TOKEN):
        return _error("InvalidClientTokenId" if query else "UnrecognizedClientException", 403, INVALID_TOKEN)
    bad = "SignatureDoesNotMatch" if query else "InvalidSignatureException"
    if kind in (sigv4.EXPIRED, sigv4.NOT_YET) or detail.startswith("Credential should be scoped"):
        return _error(bad, 403, detail)
    return _error(bad, 403, SIGNATURE_MISMATCH)


def _s3_refusal(kind: str, detail: str) -> ApiError:
    if kind == sigv4.MISSING:
        return _error("AccessDenied", 403, "Access Denied")
    if kind == sigv4.INCOMPLETE:
        return _error("AuthorizationHeaderMalformed", 400, f"The authorization header is malformed; {detail}")
    if kind == sigv4.PRESIGNED_BAD_EXPIRES:
        return _error("AuthorizationQueryParametersError", 400, detail)
    if kind == sigv4.PRESIGNED_EXPIRED:
        return _error("AccessDenied", 403, detail)
    if kind == sigv4.UNKNOWN_KEY:
        return _error("InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records.")
    if kind == sigv4.BAD_TOKEN:
        return _error("InvalidToken", 400, "The provided token is malformed or otherwise invalid.")
    if kind in (sigv4.EXPIRED, sigv4.NOT_YET):
        return _error(
            "RequestTimeTooSkewed", 403, "The difference between the request time and the current time is too large."
        )
    if kind == sigv4.SIGV2:
        return _error(
            "InvalidRequest",
            400,
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        )
    if detail.startswith(("Missing required header", "x-amz-content-sha256")):
        return _error("InvalidRequest" if detail.startswith("Missing") else "InvalidArgument", 400, detail)
    return _error("SignatureDoesNotMatch", 403, S3_SIGNATURE_MISMATCH)


def denial(err: AccessDenied, protocol: str) -> ApiError:
    if protocol == protocols.REST_XML:
        return _error("AccessDenied", 403, err.s3_message)
    if protocol == protocols.QUERY:
        return _error("AccessDenied", 403, err.message)
    return err


def authenticate(header: str | None, protocol: str = protocols.JSON, query: bytes = b"") -> Caller:
    """The caller named by an ``Authorization`` header value (or a presigned S3 query), unchecked."""
    if header is None:
        if protocol == protocols.REST_XML and (b"X-Amz-Credential=" in query or b"AWSAccessKeyId=" in query):
            return _presigned(query)
        return ANONYMOUS
    if not header.startswith(SIGV4):
        if protocol == protocols.REST_XML and header.startswith("AWS ") and ":" in header:
            return Caller(header[4:].split(":", 1)[0].strip(), None)  # SigV2, S3's alone
        raise IncompleteSignature("Authorization header requires the AWS4-HMAC-SHA256 scheme.")
    try:
        signed = sigv4.parse_authorization(header)
    except AuthFailure as failure:
        raise IncompleteSignature(failure.detail) from None
    return Caller(signed.access_key, signed.region)


ANONYMOUS = Caller(None, None)


def _presigned(query: bytes) -> Caller:
    params = dict(parse_qsl(query.decode("latin-1")))
    credential = params.get("X-Amz-Credential", "").split("/")
    if len(credential) == 5:
        return Caller(credential[0], credential[2])
    if "AWSAccessKeyId" in params:
        return Caller(params["AWSAccessKeyId"], None)
    return ANONYMOUS


@dataclass
class Security:
    """What verification needs: the verifier over the keys, the ARNs' region and account, the audit log."""

    verifier: Verifier
    region: str
    account: str
    audit: AuditLog | None = None
    sessions: Sessions | None = None  # console logins (security/sessions.py)


def session_cookie(scope: Scope) -> str | None:
    """The console session cookie of a request, if it has one."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE:
                    return val
    return None


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client disconnected before its body ended: nothing to verify, nothing to answer."""


async def _read_hashed(receive: Receive, limit: int) -> tuple[list[Message], str]:
    """The body's messages as received (handed on unchanged) and its SHA-256, refusing past ``limit``."""
    messages: list[Message] = []
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone
        messages.append(message)
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            digest.update(chunk)
        if not message.get("more_body", False):
            break
    return messages, digest.hexdigest()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(reversed(messages))

    async def receive_again() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return receive_again


def _hashing(receive: Receive, expected: str) -> Receive:
    """``receive`` checking the body against x-amz-content-sha256 as the S3 app reads it."""
    digest = hashlib.sha256()
    expected = expected.lower()

    async def receive_hashed() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            digest.update(message.get("body", b""))
            if not message.get("more_body", False) and digest.hexdigest() != expected:
                raise XAmzContentSHA256Mismatch(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    ClientComputedContentSHA256=expected,
                    S3ComputedContentSHA256=digest.hexdigest(),
                )
        return message

    return receive_hashed


def _is_hex_sha256(value: str) -> bool:
    if len(value) != 64:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


class Authenticate:
    def __init__(self, app: ASGIApp, security: Security | None = None) -> None:
        self.app = app
        self.security = security

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
        if self.security is None:
            try:
                scope[CALLER] = authenticate(header, protocol, scope.get("query_string", b""))
            except IncompleteSignature as err:
                await protocols.send_error(scope, receive, send, err, protocol)
                return
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/ping" and scope["method"] in ("GET", "HEAD"):
            scope[CALLER] = ANONYMOUS  # liveness stays open
            await self.app(scope, receive, send)
            return
        try:
            if scope[ROUTE].name == CONSOLE_ROUTE:
                scope[CALLER] = self._session_caller(scope)  # the console's signed cookie instead of SigV4
            else:
                receive = await self._verify(scope, receive, header, protocol)
                self._authorize_route(scope)
        except AuthFailure as failure:
            await protocols.send_error(scope, receive, send, refusal(failure, protocol), protocol)
            return
        except AccessDenied as err:
            await protocols.send_error(scope, receive, send, denial(err, protocol), protocol)
            return
        except _Gone:
            return
        except _TooLarge:
            too_large: ApiError = (
                ValidationError(f"Request body exceeds the maximum of {MAX_SIGNED_BODY} bytes (6 MB).")
                if protocol == protocols.REST_JSON
                else _error("RequestEntityTooLargeException", 413, "Request Entity Too Large")
            )
            await protocols.send_error(scope, receive, send, too_large, protocol)
            return
        audit = self.security.audit
        if audit is None or scope[ROUTE].name in ("invoke", "invoke-stream", "invoke-async", "sts"):
            await self.app(scope, receive, send)  # the hot path: nothing to audit
            return

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._audit(scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_audited)

    def _session_caller(self, scope: Scope) -> Caller:
        """The key of a valid console session cookie, else anonymous (the console then asks to log in)."""
        assert self.security is not None
        if self.security.sessions is None:
            return ANONYMOUS
        key = self.security.sessions.verify(session_cookie(scope))
        if key is None:
            return ANONYMOUS
        return Caller(key.access_key, self.security.region, key.name, key.account, key)

    def verify_whole(self, scope: Scope, body: bytes) -> None:
        """Verify and authorize a request of the runtime or the control plane whose whole body is ``body``
        (AuthFailure, AccessDenied): what ``__call__`` checks once it has read the body (the fast path's)."""
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        signed = self._signed(scope, header, False)
        self._accept(scope, signed, hashlib.sha256(body).hexdigest())
        self._authorize_route(scope)

    def _signed(self, scope: Scope, header: str | None, s3: bool) -> sigv4.Signed:
        """The request's signature, parsed, and scoped to the route's service (AuthFailure if not)."""
        raw_query: bytes = scope.get("query_string", b"")
        if header is None:
            if s3 and b"X-Amz-Credential=" in raw_query:
                signed = sigv4.parse_presigned(sigv4.split_query(raw_query))
            elif s3 and b"AWSAccessKeyId=" in raw_query:
                raise AuthFailure(sigv4.SIGV2)
            else:
                raise AuthFailure(sigv4.MISSING)
        elif s3 and header.startswith("AWS "):
            raise AuthFailure(sigv4.SIGV2)
        else:
            signed = sigv4.parse_authorization(header)
        expected_service = self._expected_service(scope)
        if expected_service is not None and signed.service != expected_service:
            raise AuthFailure(
                sigv4.BAD_SIGNATURE, f"Credential should be scoped to correct service: '{expected_service}'. "
            )
        return signed

    def _accept(self, scope: Scope, signed: sigv4.Signed, payload: str) -> None:
        """Verify a request other than S3's whose body hashes to ``payload``; its caller into the scope."""
        assert self.security is not None
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        query = sigv4.split_query(scope.get("query_string", b""))
        verified = self.security.verifier.verify(signed, scope["method"], raw_path, query, scope["headers"], payload)
        for name, value in scope["headers"]:  # a signed claim about the body must be true as well
            if name == b"x-amz-content-sha256" and value.decode("latin-1").lower() != payload:
                raise AuthFailure(sigv4.BAD_SIGNATURE)
        key = verified.key
        scope[CALLER] = Caller(key.access_key, signed.region, key.name, key.account, key)

    async def _verify(self, scope: Scope, receive: Receive, header: str | None, protocol: str) -> Receive:
        """Verify the signature (AuthFailure if it does not hold); the receive the app should use."""
        assert self.security is not None
        s3 = protocol == protocols.REST_XML
        signed = self._signed(scope, header, s3)
        if not s3:
            length = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
            if length.isdigit() and int(length) > MAX_SIGNED_BODY:
                raise _TooLarge
            messages, payload = await _read_hashed(receive, MAX_SIGNED_BODY)
            self._accept(scope, signed, payload)
            return _replay(messages, receive)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw_path = raw_path.split(b"?", 1)[0]
        query = signed.query if signed.presigned else sigv4.split_query(scope.get("query_string", b""))
        assert query is not None
        chunked = False
        content_sha = None
        for name, value in scope["headers"]:
            if name == b"x-amz-content-sha256":
                content_sha = value.decode("latin-1")
                break
        if signed.presigned:
            payload = sigv4.UNSIGNED_PAYLOAD if content_sha is None else content_sha
        elif content_sha is None:
            raise AuthFailure(sigv4.BAD_SIGNATURE, "Missing required header for this request: x-amz-content-sha256")
        elif content_sha in sigv4.STREAMING_SIGNED:
            payload, chunked = content_sha, True
        elif content_sha == sigv4.UNSIGNED_PAYLOAD or content_sha.startswith("STREAMING-UNSIGNED-PAYLOAD"):
            payload = content_sha
        elif _is_hex_sha256(content_sha):
            payload = content_sha
        else:
            raise AuthFailure(
                sigv4.BAD_SIGNATURE,
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid "
                "sha256 value.",
            )
        verified = self.security.verifier.verify(signed, scope["method"], raw_path, query, scope["headers"], payload)
        if chunked:
            scope[CHUNK_SIGNER] = verified.chunk_signer()
        elif content_sha is not None and _is_hex_sha256(content_sha):
            receive = _hashing(receive, content_sha)
        key = verified.key
        scope[CALLER] = Caller(key.access_key, signed.region, key.name, key.account, key)
        return receive

    @staticmethod
    def _expected_service(scope: Scope) -> str | None:
        route = scope[ROUTE].name
        if route in ("invoke", "invoke-stream", "invoke-async"):
            return "sagemaker"  # the runtime signs as sagemaker
        if route == "api" and scope["path"] == "/":
            for name, value in scope["headers"]:
                if name == b"x-amz-target":
                    return TARGET_SERVICES.get(value.decode("latin-1").split(".", 1)[0])
        return None

    def _authorize_route(self, scope: Scope) -> None:
        """The routes whose action is known from the route itself."""
        assert self.security is not None
        route = scope[ROUTE].name
        region, account = self.security.region, self.security.account
        if route in ("invoke", "invoke-stream", "invoke-async"):
            arn = f"arn:aws:sagemaker:{region}:{account}:endpoint/{scope[ENDPOINT].lower()}"
            # IAM has no separate action for the response stream: it is sagemaker:InvokeEndpoint.
            authorize(
                scope, "sagemaker:InvokeEndpointAsync" if route == "invoke-async" else "sagemaker:InvokeEndpoint", arn
            )
        elif route == "api" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            if path == "/metrics":
                authorize(scope, "cloudwatch:GetMetricData", "*")
            elif path.startswith(LOGS_PREFIX) and path.endswith(LOGS_SUFFIX):
                name = path[len(LOGS_PREFIX) : -len(LOGS_SUFFIX)]
                group = f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/{name}"
                authorize(scope, "logs:GetLogEvents", group)
            elif path.startswith(FUNCTION_LOGS_PREFIX) and path.endswith(LOGS_SUFFIX):
                name = path[len(FUNCTION_LOGS_PREFIX) : -len(LOGS_SUFFIX)]
                authorize(scope, "logs:GetLogEvents", f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{name}")

    def _audit(self, scope: Scope, status: int) -> None:
        assert self.security is not None and self.security.audit is not None
        caller: Caller = scope[CALLER]
        for action, resource in scope.get(AUTHORIZED) or ():
            if is_mutating(action):
                self.security.audit.record(
                    key=caller.name or "",
                    access_key=caller.access_key or "",
                    action=action,
                    resource=resource,
                    status=status,
                    request_id=request_id(scope),
                )
