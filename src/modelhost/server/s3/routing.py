"""Which requests are S3, where they point (path-style or virtual-host-style), and which operation
a method + path + subresource query names.

``is_s3_request``: the SigV4 credential scope names the service (``.../s3/aws4_request`` in the
``Authorization`` header or a presigned ``X-Amz-Credential``); SigV2 (``AWS key:sig``) is S3's
alone. An unsigned request is S3 unless it is one of the server's own routes (``POST /`` with
``X-Amz-Target``, ``/endpoints/*``, ``/metrics``, ``/ping``, ``/modelhost/*``).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from modelhost.server.asgi import Scope
from modelhost.server.s3 import buckets, multipart, objects
from modelhost.server.s3.actions import required
from modelhost.server.s3.request import S3Request, Stores
from modelhost.server.s3.xml import InvalidURI, MethodNotAllowed, NotImplementedError_, Reply

OWN_PREFIXES = ("/endpoints/", "/modelhost/", "/console/")  # unsigned requests there are ours, not S3's
OWN_PATHS = ("/metrics", "/ping", "/console")
# Query parameters that name a subresource (a different operation) rather than options.
SUBRESOURCES = frozenset(
    "accelerate acl analytics attributes cors delete encryption intelligent-tiering inventory legal-hold "
    "lifecycle location logging metrics notification object-lock ownershipControls partNumber policy "
    "policyStatus publicAccessBlock replication requestPayment restore retention select tagging torrent "
    "uploadId uploads versioning versions website".split()
)
NOT_ALLOWED = "The specified method is not allowed against this resource."


def signed_for_s3(scope: Scope) -> bool | None:
    """Whether the request's signature names S3; None when it is unsigned (the path must decide)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value.startswith(b"AWS4-"):
                return b"/s3/aws4_request" in value
            return value.startswith(b"AWS ")  # SigV2: only S3 still speaks it
    qs: bytes = scope.get("query_string", b"")
    if b"X-Amz-Credential=" in qs:
        return b"%2Fs3%2Faws4_request" in qs or b"/s3/aws4_request" in qs
    if b"AWSAccessKeyId=" in qs:
        return True
    return None


def is_s3_request(scope: Scope) -> bool:
    if scope.get("type") != "http":
        return False
    signed = signed_for_s3(scope)
    if signed is not None:
        return signed
    path: str = scope["path"]
    if path == "/" and scope["method"] == "POST":  # unsigned: the JSON API (X-Amz-Target) or STS (a form)
        return not any(
            name == b"x-amz-target"
            or (name == b"content-type" and value.startswith(b"application/x-www-form-urlencoded"))
            for name, value in scope["headers"]
        )
    return not (path.startswith(OWN_PREFIXES) or path in OWN_PATHS)


def locate(scope: Scope, headers: dict[str, str], virtual_host_bases: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(bucket, key) of the request: ``Host: <bucket>.<base>`` (virtual-host-style) or ``/bucket/key``."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = raw.split(b"?", 1)[0]
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURI("Couldn't parse the specified URI.") from None
    bucket = virtual_host_bucket(headers, virtual_host_bases)
    if bucket is not None:
        return bucket, path[1:] or None
    parts = path[1:].split("/", 1)
    if not parts[0]:
        return None, None
    return parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)


def virtual_host_bucket(headers: dict[str, str], virtual_host_bases: tuple[str, ...]) -> str | None:
    """The bucket named by ``Host: <bucket>.<base>[:port]``, or None (path-style)."""
    host = headers.get("host", "").lower()
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    for base in virtual_host_bases:
        if host.endswith("." + base):
            return host[: -len(base) - 1]
    return None


Check = Callable[[str, str], None]  # (IAM action, resource ARN); raises S3's AccessDenied


def _allow_all(_action: str, _resource: str) -> None:
    return None


async def dispatch(ctx: Stores, req: S3Request, check: Check = _allow_all) -> Reply:
    """Run the operation the request names, after ``check`` allowed the IAM actions it needs on their
    resources (actions.py: ``s3:ListBucket`` on ``arn:aws:s3:::bucket``, ``s3:GetObject`` on ``.../key``, ...)."""
    m, q = req.method, req.query
    for action, resource in required(m, req.bucket, req.key, q, req.headers):
        check(action, resource)
    if req.bucket is None:
        if m in ("GET", "HEAD"):
            return await buckets.list_buckets(ctx, req)
        raise MethodNotAllowed(NOT_ALLOWED)
    if req.key is None:
        if m == "GET":
            if "location" in q:
                return await buckets.get_bucket_location(ctx, req)
            if "uploads" in q:
                return await multipart.list_multipart_uploads(ctx, req)
            if "versioning" in q:
                return await buckets.get_bucket_versioning(ctx, req)
            _no_subresource(req)
            return await buckets.list_objects(ctx, req, v2=q.get("list-type") == "2")
        if m == "PUT":
            _no_subresource(req)
            return await buckets.create_bucket(ctx, req)
        if m == "HEAD":
            return await buckets.head_bucket(ctx, req)
        if m == "DELETE":
            _no_subresource(req)
            return await buckets.delete_bucket(ctx, req)
        if m == "POST" and "delete" in q:
            return await objects.delete_objects(ctx, req)
        raise MethodNotAllowed(NOT_ALLOWED)
    if m == "PUT":
        if "uploadId" in q or "partNumber" in q:
            if "x-amz-copy-source" in req.headers:
                return await multipart.upload_part_copy(ctx, req)
            return await multipart.upload_part(ctx, req)
        _no_subresource(req)
        if "x-amz-copy-source" in req.headers:
            return await objects.copy_object(ctx, req)
        return await objects.put_object(ctx, req)
    if m in ("GET", "HEAD"):
        if "uploadId" in q and m == "GET":
            return await multipart.list_parts(ctx, req)
        _no_subresource(req)
        return await objects.get_object(ctx, req, head=m == "HEAD")
    if m == "DELETE":
        if "uploadId" in q:
            return await multipart.abort_multipart_upload(ctx, req)
        _no_subresource(req)
        return await objects.delete_object(ctx, req)
    if m == "POST":
        if "uploads" in q:
            return await multipart.create_multipart_upload(ctx, req)
        if "uploadId" in q:
            return await multipart.complete_multipart_upload(ctx, req)
    raise MethodNotAllowed(NOT_ALLOWED)


def _no_subresource(req: S3Request) -> None:
    unsupported = SUBRESOURCES.intersection(req.query)
    if unsupported:
        raise NotImplementedError_(
            f"A header or query you provided implies functionality that is not implemented "
            f"({', '.join(sorted(unsupported))}).",
        )
