"""The server's S3 API as a proxy to a configured real S3 service (``MODELHOST_S3_ENDPOINT_URL``).

Each request is forwarded as it came (method, path-style path, query, headers) and re-signed with
SigV4 for the service, using the server's own AWS credentials (the usual environment) and region;
the payload is ``UNSIGNED-PAYLOAD``. Both bodies stream (nothing buffers a whole object); an
aws-chunked request body is decoded on the way and sent with its decoded length. The client's
signature, presigned query parameters and hop-by-hop headers are not forwarded. Answers, errors
included, are the service's own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace
from urllib.parse import parse_qsl, quote

import aiohttp
import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from modelhost.server.asgi import Receive, Scope, Send
from modelhost.server.s3.actions import required
from modelhost.server.s3.app import has_body, is_chunked, permission_check, send_error
from modelhost.server.s3.request import Body, ClientDisconnected
from modelhost.server.s3.routing import locate, virtual_host_bucket
from modelhost.server.s3.xml import STATUS
from modelhost.store.buckets import S3StoreError

log = logging.getLogger("modelhost.s3.proxy")

READ_CHUNK = 1024 * 1024
# Not forwarded: hop-by-hop headers, the client's signature, and what the body decoding changes.
DROP = frozenset(
    "host connection keep-alive proxy-connection proxy-authorization te trailer transfer-encoding upgrade expect "
    "content-length authorization x-amz-date x-amz-security-token x-amz-content-sha256".split()
)
DROP_CHUNKED = frozenset(["x-amz-decoded-content-length", "x-amz-trailer", "x-amz-sdk-checksum-algorithm"])
DROP_RESPONSE = frozenset([b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection"])
PRESIGN_QUERY = frozenset(
    "X-Amz-Algorithm X-Amz-Credential X-Amz-Date X-Amz-Expires X-Amz-SignedHeaders X-Amz-Signature "
    "X-Amz-Security-Token AWSAccessKeyId Signature Expires".split()
)
UNSIGNED_PAYLOAD_CONFIG = SimpleNamespace(s3={"payload_signing_enabled": False})  # S3SigV4Auth reads this


class S3Proxy:
    def __init__(self, endpoint_url: str, region: str, virtual_host_bases: Iterable[str] = ("localhost",)) -> None:
        self.endpoint = endpoint_url.rstrip("/")
        credentials = botocore.session.get_session().get_credentials()
        if credentials is None:  # as store/remote_s3.py: services that do not check (moto) still need some
            credentials = Credentials("modelhost", "modelhost")
        self.signer = S3SigV4Auth(credentials, "s3", region)
        self.virtual_host_bases = tuple(b.lower() for b in virtual_host_bases)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
                auto_decompress=False,  # bytes as stored (Content-Encoding is the object's)
                skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target(self, scope: Scope, headers: dict[str, str]) -> str:
        """The service URL (path-style, already encoded) for the request."""
        raw: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
        path = raw.split(b"?", 1)[0].decode("latin-1")
        bucket = virtual_host_bucket(headers, self.virtual_host_bases)
        if bucket is not None:
            path = f"/{quote(bucket)}{path}"
        query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)]
        kept = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query if k not in PRESIGN_QUERY)
        return f"{self.endpoint}{path}" + (f"?{kept}" if kept else "")

    def sign(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=headers)
        request.context["client_config"] = UNSIGNED_PAYLOAD_CONFIG
        self.signer.add_auth(request)
        return dict(request.headers.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        received: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("utf-8", "replace")
            received[name] = f"{received[name]},{value}" if name in received else value
        try:  # the same permissions as the embedded S3 API (a no-op when requests are not authenticated)
            check = permission_check(scope)
            bucket, key = locate(scope, received, self.virtual_host_bases)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            for action, resource in required(method, bucket, key, query, received):
                check(action, resource)
        except S3StoreError as err:
            await send_error(scope, receive, send, err.code, err.message, STATUS.get(err.code, 400))
            return
        chunked = is_chunked(received)
        drop = DROP | DROP_CHUNKED if chunked else DROP
        headers = {k: v for k, v in received.items() if k not in drop}
        if chunked:
            codings = (e.strip() for e in received.get("content-encoding", "").split(","))
            encoding = ", ".join(e for e in codings if e not in ("", "aws-chunked"))
            headers.pop("content-encoding", None)
            if encoding:
                headers["content-encoding"] = encoding
        length = received.get("x-amz-decoded-content-length" if chunked else "content-length")
        data: AsyncIterator[bytes] | bytes | None = None
        if has_body(received):
            if length is not None:
                headers["content-length"] = length
            data = Body(receive, chunked).chunks()
        elif method in ("PUT", "POST"):
            headers["content-length"] = "0"
            data = b""
        url = self.target(scope, received)
        signed = self.sign(method, url, headers)
        try:
            async with self.session().request(method, URL(url, encoded=True), headers=signed, data=data) as resp:
                out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in DROP_RESPONSE]
                await send({"type": "http.response.start", "status": resp.status, "headers": out})
                if method != "HEAD":
                    async for chunk in resp.content.iter_chunked(READ_CHUNK):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except ClientDisconnected:
            return
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("S3 proxy: %s %s failed: %s", method, url, exc)
            message = f"The S3 service at {self.endpoint} could not be reached: {type(exc).__name__}: {exc}"
            try:
                await send_error(scope, receive, send, "ServiceUnavailable", message, 503)
            except RuntimeError:  # the response had started: nothing more can be said
                pass
