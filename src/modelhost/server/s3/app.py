"""The S3 API (REST-XML) over the embedded bucket store, as a raw ASGI app.

Decode the request (``routing.locate``), dispatch to the operation (``routing.dispatch``), stream
the reply out, and answer every failure as S3's XML error. Storage behaviour is in
``store/buckets`` and ``store/multipart``; their blocking calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

from modelhost.security import AccessDenied
from modelhost.server.access import CHUNK_SIGNER, authorize
from modelhost.server.asgi import Receive, Scope, Send, request_id
from modelhost.server.s3.objects import check_put_size
from modelhost.server.s3.request import Body, ClientDisconnected, S3Request, Stores
from modelhost.server.s3.routing import dispatch, locate
from modelhost.server.s3.xml import InternalError, Reply, error_reply
from modelhost.store.buckets import BucketStore, S3StoreError, error_class
from modelhost.store.multipart import MultipartUploads

log = logging.getLogger("modelhost.s3")
S3AccessDenied = error_class("AccessDenied")

READ_CHUNK = 1024 * 1024  # bytes per GetObject body message


def request_headers(scope: Scope) -> dict[str, str]:
    """Lower-case names; repeated headers joined with commas; ``x-amz-meta-*`` values as UTF-8."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "replace") if name.startswith("x-amz-meta-") else raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def is_chunked(headers: dict[str, str]) -> bool:
    """An aws-chunked body (streaming SigV4, signed or not, with or without trailers)."""
    content_sha = headers.get("x-amz-content-sha256", "")
    return content_sha.startswith("STREAMING-") or "aws-chunked" in headers.get("content-encoding", "")


class S3App:
    def __init__(
        self,
        store: BucketStore,
        uploads: MultipartUploads,
        region: str = "us-east-1",
        virtual_host_bases: Iterable[str] = ("localhost",),
    ) -> None:
        self.stores = Stores(store, uploads, region)
        self.virtual_host_bases = tuple(b.lower() for b in virtual_host_bases)

    def locate(self, scope: Scope, headers: dict[str, str]) -> tuple[str | None, str | None]:
        return locate(scope, headers, self.virtual_host_bases)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        rid = request_id(scope)
        resource = scope.get("path", "/")
        req: S3Request | None = None
        try:
            bucket, key = self.locate(scope, headers)
            if scope["method"] == "PUT" and key is not None:  # PutObject / UploadPart: at once, body unread
                check_put_size(self.stores.store, headers, is_chunked(headers))
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            body = Body(receive, is_chunked(headers), scope.get(CHUNK_SIGNER))  # chunk signatures checked
            req = S3Request(scope["method"], bucket, key, query, headers, body, rid)
            reply = await dispatch(self.stores, req, permission_check(scope))
        except ClientDisconnected:
            return
        except S3StoreError as err:
            reply = error_reply(err, rid, resource)
        except Exception as exc:  # never answer with a stack trace
            log.exception("S3 request failed")
            reply = error_reply(InternalError(f"{type(exc).__name__}: {exc}"), rid, resource)
        if reply.status >= 300 and (req is None or not req.body.finished) and has_body(headers):
            # The body was not read: do not let its bytes be taken for the next request.
            reply.headers.append(("connection", "close"))
        await send_reply(scope, receive, send, reply, rid)


def permission_check(scope: Scope) -> Callable[[str, str], None]:
    """The caller's permission check for ``routing.dispatch``, denials as S3's ``AccessDenied``."""

    def check(action: str, resource: str) -> None:
        try:
            authorize(scope, action, resource)
        except AccessDenied as err:
            raise S3AccessDenied(err.s3_message) from None

    return check


async def send_error(scope: Scope, receive: Receive, send: Send, code: str, message: str, status: int) -> None:
    """An S3 XML error for a request no S3 operation saw (the front door's middleware refused it)."""
    reply = error_reply(error_class(code)(message), request_id(scope), scope.get("path", "/"))
    reply.status = status
    if has_body(request_headers(scope)):
        reply.headers.append(("connection", "close"))
    await send_reply(scope, receive, send, reply, request_id(scope))


async def send_reply(scope: Scope, receive: Receive, send: Send, reply: Reply, rid: str) -> None:
    headers = [("x-amz-request-id", rid), ("x-amz-id-2", rid), *reply.headers]
    length = reply.length if reply.file is not None else len(reply.body)
    if not any(k == "content-length" for k, _ in headers) and reply.status not in (204, 304):
        headers.append(("content-length", str(length)))
    raw_headers = [
        (k.encode("latin-1"), v.encode("utf-8") if k.startswith("x-amz-meta-") else v.encode("latin-1", "replace"))
        for k, v in headers
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
    if reply.file is None or scope["method"] == "HEAD":
        if reply.file is not None:
            await asyncio.to_thread(reply.file.close)
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body})
        return
    f = reply.file
    watch = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        remaining = reply.length
        while remaining > 0 and not watch.done():
            chunk = await asyncio.to_thread(f.read, min(READ_CHUNK, remaining))
            if not chunk:
                break  # the file shrank under us (replaced files keep their bytes; this is truncation)
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        if remaining > 0 and not watch.done():
            raise RuntimeError("object file truncated while being sent")
    finally:
        watch.cancel()
        await asyncio.to_thread(f.close)


def has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in headers


async def _wait_disconnect(receive: Receive) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
