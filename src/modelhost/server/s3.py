"""The S3 API (REST-XML) over the embedded bucket store.

A raw ASGI app: decode the request (path-style ``/bucket/key`` or virtual-host-style
``Host: bucket.localhost``), route on method + path + subresource query, stream bodies in and out
(aws-chunked decoding included), encode XML, map errors. Storage behaviour is in
``store/buckets.py`` and ``store/multipart.py``; their blocking calls run in worker threads.

Which requests are S3 (``is_s3_request``): the SigV4 credential scope names the service
(``.../s3/aws4_request`` in the ``Authorization`` header or a presigned ``X-Amz-Credential``);
SigV2 (``AWS key:sig``) is S3's alone. An unsigned request is S3 unless it is one of the server's
own routes (``POST /`` with ``X-Amz-Target``, ``/endpoints/*``, ``/metrics``, ``/ping``,
``/modelhost/*``). Credentials are not checked (as elsewhere in modelhost today).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime
from typing import IO, Any
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes

from modelhost.store.buckets import (
    CHECKSUM_ALGORITHMS,
    DEFAULT_CONTENT_TYPE,
    STORED_HEADERS,
    BucketStore,
    InvalidArgument,
    InvalidRequest,
    ObjectAttrs,
    ObjectMeta,
    ObjectWriter,
    PreconditionFailed,
    S3StoreError,
    decode_content_md5,
    error_class,
)
from modelhost.store.multipart import MultipartUploads, Upload, check_part_number

log = logging.getLogger("modelhost.s3")

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "modelhost"
WRITE_BATCH = 1024 * 1024  # bytes handed to the writer thread at a time
READ_CHUNK = 1024 * 1024  # bytes per GetObject body message
MAX_XML_BODY = 4 * 1024 * 1024
MAX_LIST_KEYS = 1000
MAX_DELETE_KEYS = 1000
HIGHEST = "\U0010ffff"  # sorts after every character a key can continue with

MalformedXML = error_class("MalformedXML")
InvalidURI = error_class("InvalidURI")
MethodNotAllowed = error_class("MethodNotAllowed")
NotImplementedError_ = error_class("NotImplemented")
MissingContentLength = error_class("MissingContentLength")
IncompleteBody = error_class("IncompleteBody")
InvalidRange = error_class("InvalidRange")
MaxMessageLengthExceeded = error_class("MaxMessageLengthExceeded")
InternalError = error_class("InternalError")

STATUS = {
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "BucketAlreadyOwnedByYou": 409,
    "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409,
    "InvalidRange": 416,
    "PreconditionFailed": 412,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NotImplemented": 501,
    "InternalError": 500,
    "AccessDenied": 403,
}

# Query parameters that name a subresource (a different operation) rather than options.
SUBRESOURCES = frozenset(
    "accelerate acl analytics attributes cors delete encryption intelligent-tiering inventory legal-hold "
    "lifecycle location logging metrics notification object-lock ownershipControls partNumber policy "
    "policyStatus publicAccessBlock replication requestPayment restore retention select tagging torrent "
    "uploadId uploads versioning versions website".split()
)
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
CHECKSUM_XML = {
    "ChecksumCRC32": "crc32",
    "ChecksumCRC32C": "crc32c",
    "ChecksumCRC64NVME": "crc64nvme",
    "ChecksumSHA1": "sha1",
    "ChecksumSHA256": "sha256",
}
CHECKSUM_TAG = {v: k for k, v in CHECKSUM_XML.items()}
OWN_PREFIXES = ("/endpoints/", "/modelhost/")
OWN_PATHS = ("/metrics", "/ping")


# --- which requests are S3 ----------------------------------------------------------------------


def is_s3_request(scope: dict) -> bool:
    if scope.get("type") != "http":
        return False
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
    path: str = scope["path"]
    if path == "/" and scope["method"] == "POST":
        return not any(name == b"x-amz-target" for name, _ in scope["headers"])
    return not (path.startswith(OWN_PREFIXES) or path in OWN_PATHS)


# --- aws-chunked ---------------------------------------------------------------------------------


class AwsChunkedDecoder:
    """Incremental decoder for ``Content-Encoding: aws-chunked`` bodies (streaming SigV4, signed
    or unsigned, with or without trailers): ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n``
    ... ``0[;...]\\r\\n`` then trailer lines ``name:value\\r\\n`` and an empty line. Chunk
    signatures are not verified (credentials are not checked anywhere yet)."""

    MAX_LINE = 8192
    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self) -> None:
        self._line = bytearray()
        self._state = self.SIZE
        self._remaining = 0
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    @property
    def done(self) -> bool:
        return self._state == self.DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n and self._state != self.DONE:
            if self._state == self.DATA:
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                self.decoded += take
                if self._remaining == 0:
                    self._state = self.DATA_END
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > self.MAX_LINE:
                    raise IncompleteBody("Malformed aws-chunked body: line too long.")
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            line = bytes(self._line[:-2] if self._line.endswith(b"\r\n") else self._line[:-1])
            self._line.clear()
            self._line_done(line)
        return out

    def _line_done(self, line: bytes) -> None:
        if self._state == self.SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.") from None
            if size < 0:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.")
            if size == 0:
                self._state = self.TRAILER
            else:
                self._remaining, self._state = size, self.DATA
        elif self._state == self.DATA_END:
            if line:
                raise IncompleteBody("Malformed aws-chunked body: chunk longer than its size.")
            self._state = self.SIZE
        elif self._state == self.TRAILER:
            if not line:
                self._state = self.DONE
                return
            name, sep, value = line.partition(b":")
            if not sep:
                raise IncompleteBody("Malformed aws-chunked body: bad trailer line.")
            self.trailers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def finish(self) -> None:
        if self._state == self.TRAILER and not self._line:
            self._state = self.DONE  # tolerate a missing final empty line
        if self._state != self.DONE:
            raise IncompleteBody("The request body terminated unexpectedly (incomplete aws-chunked body).")


# --- requests and replies ------------------------------------------------------------------------


class ClientDisconnected(Exception):
    pass


class Body:
    """The request body as a stream of decoded chunks."""

    def __init__(self, receive: Any, chunked: bool) -> None:
        self._receive = receive
        self.finished = False
        self.started = False
        self.decoder = AwsChunkedDecoder() if chunked else None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while not self.finished:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            data = message.get("body", b"")
            self.finished = not message.get("more_body", False)
            if self.decoder is not None:
                for piece in self.decoder.feed(data):
                    yield piece
            elif data:
                yield data
        if self.decoder is not None:
            self.decoder.finish()

    async def read(self, limit: int = MAX_XML_BODY) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise MaxMessageLengthExceeded("Your request was too big.")
            parts.append(chunk)
        return b"".join(parts)


@dataclass
class S3Request:
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Body
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16].upper())

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: IO[bytes] | None = None  # stream ``length`` bytes from the file's position
    length: int = 0


def _xml(root: ET.Element) -> Reply:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return Reply(200, [("content-type", "application/xml")], body)


def _root(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=NS)


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = text if isinstance(text, str) else str(text).lower() if isinstance(text, bool) else str(text)
    return el


def _parse_xml(body: bytes) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise MalformedXML(
            "The XML you provided was not well-formed or did not validate against our published schema"
        ) from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _quoted(etag: str) -> str:
    return f'"{etag}"'


def error_reply(err: S3StoreError, request_id: str, resource: str) -> Reply:
    status = STATUS.get(err.code, 400)
    root = ET.Element("Error")
    _sub(root, "Code", err.code)
    _sub(root, "Message", err.message)
    for name, value in err.fields.items():
        _sub(root, name.replace("_", "-"), value)
    if "Key" not in err.fields and "BucketName" not in err.fields:
        _sub(root, "Resource", resource)
    _sub(root, "RequestId", request_id)
    _sub(root, "HostId", request_id)
    reply = _xml(root)
    reply.status = status
    if err.code == "InvalidRange" and "ActualObjectSize" in err.fields:
        reply.headers.append(("content-range", f"bytes */{err.fields['ActualObjectSize']}"))
    return reply


def _etag_matches(header: str, etag: str) -> bool:
    tokens = [t.strip() for t in header.split(",")]
    return any(t == "*" or t.removeprefix("W/").strip('"') == etag for t in tokens)


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (first, last) inclusive; None to send the whole object
    (no header, or one S3 ignores); InvalidRange when it cannot be satisfied."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise _invalid_range(value, size)
        return max(0, size - suffix), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if m[2] and last < first:
        return None
    if first >= size:
        raise _invalid_range(value, size)
    return first, min(last, size - 1)


def _invalid_range(value: str, size: int) -> S3StoreError:
    return InvalidRange("The requested range is not satisfiable", RangeRequested=value, ActualObjectSize=str(size))


def _attrs_from_headers(headers: dict[str, str]) -> ObjectAttrs:
    attrs = ObjectAttrs(content_type=headers.get("content-type") or DEFAULT_CONTENT_TYPE)
    for name, value in headers.items():
        if name.startswith("x-amz-meta-"):
            attrs.user[name[len("x-amz-meta-") :]] = value
        elif name in STORED_HEADERS:
            if name == "content-encoding":
                value = ", ".join(v.strip() for v in value.split(",") if v.strip() and v.strip() != "aws-chunked")
                if not value:
                    continue
            attrs.headers[name] = value
    return attrs


def _object_headers(meta: ObjectMeta) -> list[tuple[str, str]]:
    headers = [
        ("etag", _quoted(meta.etag)),
        ("last-modified", _http_date(meta.mtime)),
        ("accept-ranges", "bytes"),
        ("content-type", meta.attrs.content_type),
    ]
    headers += list(meta.attrs.headers.items())
    headers += [(f"x-amz-meta-{k}", v) for k, v in meta.attrs.user.items()]
    if "-" in meta.etag:
        headers.append(("x-amz-mp-parts-count", meta.etag.rsplit("-", 1)[1]))
    return headers


# --- the app -------------------------------------------------------------------------------------


class S3App:
    def __init__(
        self,
        store: BucketStore,
        uploads: MultipartUploads,
        region: str = "us-east-1",
        virtual_host_bases: Iterable[str] = ("localhost",),
    ) -> None:
        self.store = store
        self.uploads = uploads
        self.region = region
        self.virtual_host_bases = tuple(b.lower() for b in virtual_host_bases)

    # --- ASGI ---

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = (
                raw_value.decode("utf-8", "replace") if name.startswith("x-amz-meta-") else raw_value.decode("latin-1")
            )
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        content_sha = headers.get("x-amz-content-sha256", "")
        chunked = content_sha.startswith("STREAMING-") or "aws-chunked" in headers.get("content-encoding", "")
        request_id = uuid.uuid4().hex[:16].upper()
        resource = scope.get("path", "/")
        req: S3Request | None = None
        try:
            bucket, key = self._locate(scope, headers)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            req = S3Request(scope["method"], bucket, key, query, headers, Body(receive, chunked), request_id)
            reply = await self.dispatch(req)
        except ClientDisconnected:
            return
        except S3StoreError as err:
            reply = error_reply(err, request_id, resource)
        except Exception as exc:  # never answer with a stack trace
            log.exception("S3 request failed")
            reply = error_reply(InternalError(f"{type(exc).__name__}: {exc}"), request_id, resource)
        if req is not None and reply.status >= 300 and not req.body.finished and _has_body(headers):
            # The body was not read: do not let its bytes be taken for the next request.
            reply.headers.append(("connection", "close"))
        await self._send(scope, receive, send, reply, request_id)

    def _locate(self, scope: dict, headers: dict[str, str]) -> tuple[str | None, str | None]:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        raw = raw.split(b"?", 1)[0]
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidURI("Couldn't parse the specified URI.") from None
        host = headers.get("host", "").lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        for base in self.virtual_host_bases:
            if host.endswith("." + base):
                key = path[1:]
                return host[: -len(base) - 1], key or None
        parts = path[1:].split("/", 1)
        if not parts[0]:
            return None, None
        return parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)

    async def _send(self, scope: dict, receive: Any, send: Any, reply: Reply, request_id: str) -> None:
        headers = [("x-amz-request-id", request_id), ("x-amz-id-2", request_id), *reply.headers]
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

    # --- routing ---

    async def dispatch(self, req: S3Request) -> Reply:
        m, q = req.method, req.query
        if req.bucket is None:
            if m in ("GET", "HEAD"):
                return await self.list_buckets(req)
            raise MethodNotAllowed("The specified method is not allowed against this resource.")
        if req.key is None:
            if m == "GET":
                if "location" in q:
                    return await self.get_bucket_location(req)
                if "uploads" in q:
                    return await self.list_multipart_uploads(req)
                if "versioning" in q:
                    return await self.get_bucket_versioning(req)
                self._no_subresource(req)
                if q.get("list-type") == "2":
                    return await self.list_objects(req, v2=True)
                return await self.list_objects(req, v2=False)
            if m == "PUT":
                self._no_subresource(req)
                return await self.create_bucket(req)
            if m == "HEAD":
                return await self.head_bucket(req)
            if m == "DELETE":
                self._no_subresource(req)
                return await self.delete_bucket(req)
            if m == "POST" and "delete" in q:
                return await self.delete_objects(req)
            raise MethodNotAllowed("The specified method is not allowed against this resource.")
        if m == "PUT":
            if "uploadId" in q or "partNumber" in q:
                if "x-amz-copy-source" in req.headers:
                    return await self.upload_part_copy(req)
                return await self.upload_part(req)
            self._no_subresource(req)
            if "x-amz-copy-source" in req.headers:
                return await self.copy_object(req)
            return await self.put_object(req)
        if m in ("GET", "HEAD"):
            if "uploadId" in q and m == "GET":
                return await self.list_parts(req)
            self._no_subresource(req)
            return await self.get_object(req, head=m == "HEAD")
        if m == "DELETE":
            if "uploadId" in q:
                return await self.abort_multipart_upload(req)
            self._no_subresource(req)
            return await self.delete_object(req)
        if m == "POST":
            if "uploads" in q:
                return await self.create_multipart_upload(req)
            if "uploadId" in q:
                return await self.complete_multipart_upload(req)
        raise MethodNotAllowed("The specified method is not allowed against this resource.")

    @staticmethod
    def _no_subresource(req: S3Request) -> None:
        unsupported = SUBRESOURCES.intersection(req.query)
        if unsupported:
            raise NotImplementedError_(
                f"A header or query you provided implies functionality that is not implemented "
                f"({', '.join(sorted(unsupported))}).",
            )

    @staticmethod
    def _names(req: S3Request) -> tuple[str, str]:
        assert req.bucket is not None and req.key is not None
        return req.bucket, req.key

    # --- buckets ---

    async def list_buckets(self, req: S3Request) -> Reply:
        buckets = await asyncio.to_thread(self.store.list_buckets)
        prefix = req.query.get("prefix", "")
        root = _root("ListAllMyBucketsResult")
        owner = _sub(root, "Owner")
        _sub(owner, "ID", OWNER_ID)
        _sub(owner, "DisplayName", OWNER_NAME)
        container = _sub(root, "Buckets")
        for b in buckets:
            if b.name.startswith(prefix):
                el = _sub(container, "Bucket")
                _sub(el, "Name", b.name)
                _sub(el, "CreationDate", _iso(b.created))
                _sub(el, "BucketRegion", b.location or self.region)
        if prefix:
            _sub(root, "Prefix", prefix)
        return _xml(root)

    async def create_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        body = await req.body.read()
        location = ""
        if body.strip():
            root = _parse_xml(body)
            if root.tag != "CreateBucketConfiguration":
                raise MalformedXML(
                    "The XML you provided was not well-formed or did not validate against our published schema"
                )
            location = (root.findtext("LocationConstraint") or "").strip()
        await asyncio.to_thread(self.store.create_bucket, req.bucket, location)
        return Reply(200, [("location", f"/{req.bucket}")])

    async def head_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        bucket = await asyncio.to_thread(self.store.head_bucket, req.bucket)
        return Reply(
            200,
            [
                ("x-amz-bucket-region", bucket.location or self.region),
                ("x-amz-access-point-alias", "false"),
                ("content-type", "application/xml"),
            ],
        )

    async def delete_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        bucket = req.bucket

        def delete() -> None:
            self.store.delete_bucket(bucket)
            self.uploads.abort_bucket(bucket)  # unfinished uploads die with their bucket

        await asyncio.to_thread(delete)
        return Reply(204)

    async def get_bucket_location(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        bucket = await asyncio.to_thread(self.store.head_bucket, req.bucket)
        root = _root("LocationConstraint")
        if bucket.location and bucket.location != "us-east-1":
            root.text = bucket.location
        return _xml(root)

    async def get_bucket_versioning(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await asyncio.to_thread(self.store.head_bucket, req.bucket)
        return _xml(_root("VersioningConfiguration"))

    # --- listing ---

    async def list_objects(self, req: S3Request, v2: bool) -> Reply:
        assert req.bucket is not None
        bucket, q = req.bucket, req.query
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        encoding = q.get("encoding-type")
        if encoding not in (None, "url"):
            raise InvalidArgument(
                "Invalid Encoding Method specified in Request",
                ArgumentName="encoding-type",
                ArgumentValue=encoding or "",
            )
        try:
            max_keys = int(q.get("max-keys", str(MAX_LIST_KEYS)))
        except ValueError:
            max_keys = -1
        if max_keys < 0:
            raise InvalidArgument(
                "Provided max-keys not an integer or within integer range",
                ArgumentName="max-keys",
                ArgumentValue=q.get("max-keys", ""),
            )
        max_keys = min(max_keys, MAX_LIST_KEYS)
        token = q.get("continuation-token")
        skip_cp = ""
        if v2:
            after = q.get("start-after", "")
            if token is not None:
                after, skip_cp = _decode_token(token)
        else:
            after = q.get("marker", "")
            if delimiter and after.startswith(prefix):
                i = after.find(delimiter, len(prefix))
                if i >= 0 and i + len(delimiter) == len(after):
                    skip_cp = after  # the marker is a common prefix: resume after all of it
        start_after = skip_cp + HIGHEST if skip_cp else after

        def page() -> tuple[list[ObjectMeta], list[str], list[tuple[str, str]], bool]:
            order: list[tuple[str, str]] = []  # (kind, key or prefix) in list order
            found: list[tuple[str, Any]] = []
            prefixes: list[str] = []
            last_cp = skip_cp
            truncated = False
            it = self.store.iter_keys(bucket, prefix, start_after)
            while True:
                item = next(it, None)
                if item is None:
                    break
                key, st = item
                cp = None
                if delimiter:
                    i = key.find(delimiter, len(prefix))
                    if i >= 0:
                        cp = key[: i + len(delimiter)]
                if cp is not None and cp == last_cp:
                    continue
                if len(order) >= max_keys:
                    truncated = True
                    break
                if cp is not None:
                    prefixes.append(cp)
                    order.append(("cp", cp))
                    last_cp = cp
                    it = self.store.iter_keys(bucket, prefix, cp + HIGHEST)  # skip the rest of it
                else:
                    found.append((key, st))
                    order.append(("key", key))
            return self.store.describe_many(bucket, found), prefixes, order, truncated

        objects, prefixes, order, truncated = await asyncio.to_thread(page)

        def enc(value: str) -> str:
            return quote(value, safe="/") if encoding == "url" else value

        root = _root("ListBucketResult")
        _sub(root, "Name", bucket)
        _sub(root, "Prefix", enc(prefix))
        if v2:
            if token is not None:
                _sub(root, "ContinuationToken", token)
            if q.get("start-after"):
                _sub(root, "StartAfter", enc(q["start-after"]))
            _sub(root, "KeyCount", len(order))
        else:
            _sub(root, "Marker", enc(after))
        _sub(root, "MaxKeys", max_keys)
        if delimiter:
            _sub(root, "Delimiter", enc(delimiter))
        if encoding:
            _sub(root, "EncodingType", encoding)
        _sub(root, "IsTruncated", truncated)
        if truncated and order:
            kind, last = order[-1]
            if v2:
                _sub(root, "NextContinuationToken", _encode_token(last, kind == "cp"))
            else:
                _sub(root, "NextMarker", enc(last))
        fetch_owner = not v2 or q.get("fetch-owner") == "true"
        for meta in objects:
            el = _sub(root, "Contents")
            _sub(el, "Key", enc(meta.key))
            _sub(el, "LastModified", _iso(meta.mtime))
            _sub(el, "ETag", _quoted(meta.etag))
            for alg in meta.attrs.checksums:
                _sub(el, "ChecksumAlgorithm", alg.upper())
            _sub(el, "Size", meta.size)
            if fetch_owner:
                owner = _sub(el, "Owner")
                _sub(owner, "ID", OWNER_ID)
                _sub(owner, "DisplayName", OWNER_NAME)
            _sub(el, "StorageClass", "STANDARD")
        for cp in prefixes:
            _sub(_sub(root, "CommonPrefixes"), "Prefix", enc(cp))
        return _xml(root)

    # --- objects ---

    async def put_object(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        attrs = _attrs_from_headers(req.headers)
        expect = _Expectations.from_request(req)
        writer = await asyncio.to_thread(self.store.new_writer, bucket, key, **expect.writer_options())
        try:
            await self._receive_into(req, writer)
            attrs.checksums = await asyncio.to_thread(expect.verify, req, writer)
            meta = await asyncio.to_thread(
                self.store.commit,
                bucket,
                key,
                writer.path,
                writer.md5.hexdigest(),
                attrs,
                if_none_match=(req.header("if-none-match") or "").strip() == "*",
            )
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        return Reply(200, [("etag", _quoted(meta.etag)), *_checksum_headers(expect.reported(attrs.checksums))])

    async def _receive_into(self, req: S3Request, writer: ObjectWriter) -> None:
        if "content-length" not in req.headers and "transfer-encoding" not in req.headers:
            raise MissingContentLength("You must provide the Content-Length HTTP header.")
        pending: list[bytes] = []
        size = 0
        async for chunk in req.body.chunks():
            pending.append(chunk)
            size += len(chunk)
            if size >= WRITE_BATCH:
                data = b"".join(pending)
                pending.clear()
                size = 0
                await asyncio.to_thread(writer.write, data)
        if pending:
            await asyncio.to_thread(writer.write, b"".join(pending))
        declared = req.header("x-amz-decoded-content-length")
        if (
            req.body.decoder is not None
            and declared is not None
            and declared.isdigit()
            and int(declared) != writer.size
        ):
            raise IncompleteBody(
                "You did not provide the number of bytes specified by the x-amz-decoded-content-length header."
            )

    async def get_object(self, req: S3Request, head: bool) -> Reply:
        bucket, key = self._names(req)
        f: IO[bytes] | None = None
        if head:
            meta = await asyncio.to_thread(self.store.head_object, bucket, key)
        else:
            meta, f = await asyncio.to_thread(self.store.open_object, bucket, key)
        try:
            headers = _object_headers(meta)
            not_modified = _check_conditions(req, meta)
            if not_modified:
                if f is not None:
                    f.close()
                return Reply(304, [h for h in headers if h[0] in ("etag", "last-modified")])
            rng = parse_range(req.header("range"), meta.size)
            if (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED" and rng is None and "-" not in meta.etag:
                headers += _checksum_headers(meta.attrs.checksums)
            overrides = {RESPONSE_OVERRIDES[k]: v for k, v in req.query.items() if k in RESPONSE_OVERRIDES}
            if overrides:
                headers = [h for h in headers if h[0] not in overrides] + list(overrides.items())
            if rng is None:
                headers.append(("content-length", str(meta.size)))
                return Reply(200, headers, file=f, length=meta.size)
            first, last = rng
            headers += [
                ("content-range", f"bytes {first}-{last}/{meta.size}"),
                ("content-length", str(last - first + 1)),
            ]
            if f is not None:
                await asyncio.to_thread(f.seek, first)
            return Reply(206, headers, file=f, length=last - first + 1)
        except BaseException:
            if f is not None:
                f.close()
            raise

    async def copy_object(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        src_bucket, src_key = _copy_source(req.headers["x-amz-copy-source"])
        directive = (req.header("x-amz-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise InvalidArgument(
                "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive", ArgumentValue=directive
            )
        if (src_bucket, src_key) == (bucket, key) and directive == "COPY":
            raise InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing "
                "the object's metadata, storage class, website redirect location or encryption attributes."
            )
        attrs = _attrs_from_headers(req.headers) if directive == "REPLACE" else None
        meta = await asyncio.to_thread(self.store.copy_object, src_bucket, src_key, bucket, key, attrs)
        root = _root("CopyObjectResult")
        _sub(root, "LastModified", _iso(meta.mtime))
        _sub(root, "ETag", _quoted(meta.etag))
        return _xml(root)

    async def delete_object(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        await asyncio.to_thread(self.store.delete_object, bucket, key)
        return Reply(204)

    async def delete_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        bucket = req.bucket
        expect = _Expectations.from_request(req)
        body = await req.body.read()
        if expect.content_md5 is not None:
            import hashlib

            if hashlib.md5(body).digest() != expect.content_md5:
                raise error_class("BadDigest")("The Content-MD5 you specified did not match what we received.")
        root = _parse_xml(body)
        objects = root.findall("Object") if root.tag == "Delete" else []
        keys = [o.findtext("Key") for o in objects]
        if not objects or len(objects) > MAX_DELETE_KEYS or any(k is None for k in keys):
            raise MalformedXML(
                "The XML you provided was not well-formed or did not validate against our published schema"
            )
        quiet = (root.findtext("Quiet") or "").strip().lower() == "true"

        def delete_all() -> list[tuple[str, S3StoreError | None]]:
            self.store.bucket_dir(bucket)
            results: list[tuple[str, S3StoreError | None]] = []
            for k in keys:
                assert k is not None
                try:
                    self.store.delete_object(bucket, k)
                    results.append((k, None))
                except S3StoreError as err:
                    if err.code == "NoSuchBucket":
                        raise
                    results.append((k, err))
            return results

        results = await asyncio.to_thread(delete_all)
        out = _root("DeleteResult")
        for k, err in results:
            if err is None:
                if not quiet:
                    _sub(_sub(out, "Deleted"), "Key", k)
            else:
                el = _sub(out, "Error")
                _sub(el, "Key", k)
                _sub(el, "Code", err.code)
                _sub(el, "Message", err.message)
        return _xml(out)

    # --- multipart ---

    async def create_multipart_upload(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        attrs = _attrs_from_headers(req.headers)
        algorithm = (req.header("x-amz-checksum-algorithm") or "").lower()
        upload = await asyncio.to_thread(self.uploads.create, bucket, key, attrs, algorithm)
        root = _root("InitiateMultipartUploadResult")
        _sub(root, "Bucket", bucket)
        _sub(root, "Key", key)
        _sub(root, "UploadId", upload.upload_id)
        reply = _xml(root)
        if algorithm:
            reply.headers.append(("x-amz-checksum-algorithm", algorithm.upper()))
        return reply

    async def _upload(self, req: S3Request) -> tuple[Upload, int]:
        bucket, key = self._names(req)
        number = check_part_number(req.query.get("partNumber", ""))
        upload = await asyncio.to_thread(self.uploads.get, bucket, key, req.query.get("uploadId", ""))
        return upload, number

    async def upload_part(self, req: S3Request) -> Reply:
        upload, number = await self._upload(req)
        expect = _Expectations.from_request(req)
        writer = await asyncio.to_thread(self.uploads.new_part_writer, upload, **expect.writer_options())
        try:
            await self._receive_into(req, writer)
            checksums = await asyncio.to_thread(expect.verify, req, writer)
            part = await asyncio.to_thread(self.uploads.commit_part, upload, number, writer, checksums)
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        return Reply(200, [("etag", _quoted(part.etag)), *_checksum_headers(expect.reported(checksums))])

    async def upload_part_copy(self, req: S3Request) -> Reply:
        upload, number = await self._upload(req)
        src_bucket, src_key = _copy_source(req.headers["x-amz-copy-source"])
        first = last = None
        rng = req.header("x-amz-copy-source-range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng.strip())
            if not m:
                raise InvalidArgument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last",
                    ArgumentName="x-amz-copy-source-range",
                    ArgumentValue=rng,
                )
            first, last = int(m[1]), int(m[2])
        part = await asyncio.to_thread(self.uploads.copy_part, upload, number, src_bucket, src_key, first, last)
        root = _root("CopyPartResult")
        _sub(root, "LastModified", _iso(part.mtime))
        _sub(root, "ETag", _quoted(part.etag))
        return _xml(root)

    async def complete_multipart_upload(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        upload = await asyncio.to_thread(self.uploads.get, bucket, key, req.query.get("uploadId", ""))
        root = _parse_xml(await req.body.read())
        if root.tag != "CompleteMultipartUpload":
            raise MalformedXML(
                "The XML you provided was not well-formed or did not validate against our published schema"
            )
        parts: list[tuple[int, str, dict[str, str]]] = []
        for el in root.findall("Part"):
            number, etag = (el.findtext("PartNumber") or "").strip(), (el.findtext("ETag") or "").strip()
            if not number.isdigit() or not etag:
                raise MalformedXML(
                    "The XML you provided was not well-formed or did not validate against our published schema"
                )
            checksums = {alg: v.strip() for tag, alg in CHECKSUM_XML.items() if (v := el.findtext(tag))}
            parts.append((int(number), etag, checksums))
        meta = await asyncio.to_thread(self.uploads.complete, upload, parts)
        out = _root("CompleteMultipartUploadResult")
        _sub(out, "Location", f"/{bucket}/{quote(key)}")
        _sub(out, "Bucket", bucket)
        _sub(out, "Key", key)
        _sub(out, "ETag", _quoted(meta.etag))
        return _xml(out)

    async def abort_multipart_upload(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        upload = await asyncio.to_thread(self.uploads.get, bucket, key, req.query.get("uploadId", ""))
        await asyncio.to_thread(self.uploads.abort, upload)
        return Reply(204)

    async def list_parts(self, req: S3Request) -> Reply:
        bucket, key = self._names(req)
        upload = await asyncio.to_thread(self.uploads.get, bucket, key, req.query.get("uploadId", ""))
        parts = await asyncio.to_thread(self.uploads.parts, upload)
        try:
            marker = int(req.query.get("part-number-marker", "0") or 0)
            max_parts = min(int(req.query.get("max-parts", "1000")), 1000)
        except ValueError:
            raise InvalidArgument("Invalid part-number-marker or max-parts.") from None
        remaining = [p for p in parts if p.number > marker]
        page, truncated = remaining[:max_parts], len(remaining) > max_parts
        root = _root("ListPartsResult")
        _sub(root, "Bucket", bucket)
        _sub(root, "Key", key)
        _sub(root, "UploadId", upload.upload_id)
        _sub(root, "PartNumberMarker", marker)
        if page:
            _sub(root, "NextPartNumberMarker", page[-1].number)
        _sub(root, "MaxParts", max_parts)
        _sub(root, "IsTruncated", truncated)
        for p in page:
            el = _sub(root, "Part")
            _sub(el, "PartNumber", p.number)
            _sub(el, "LastModified", _iso(p.mtime))
            _sub(el, "ETag", _quoted(p.etag))
            _sub(el, "Size", p.size)
            for alg, value in p.checksums.items():
                if alg in CHECKSUM_TAG:
                    _sub(el, CHECKSUM_TAG[alg], value)
        owner = _sub(root, "Owner")
        _sub(owner, "ID", OWNER_ID)
        _sub(owner, "DisplayName", OWNER_NAME)
        _sub(root, "StorageClass", "STANDARD")
        if upload.checksum_algorithm:
            _sub(root, "ChecksumAlgorithm", upload.checksum_algorithm.upper())
        return _xml(root)

    async def list_multipart_uploads(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        prefix = req.query.get("prefix", "")
        uploads = await asyncio.to_thread(self.uploads.list_uploads, req.bucket, prefix)
        root = _root("ListMultipartUploadsResult")
        _sub(root, "Bucket", req.bucket)
        _sub(root, "KeyMarker", "")
        _sub(root, "UploadIdMarker", "")
        _sub(root, "Prefix", prefix)
        _sub(root, "MaxUploads", 1000)
        _sub(root, "IsTruncated", False)
        for u in uploads:
            el = _sub(root, "Upload")
            _sub(el, "Key", u.key)
            _sub(el, "UploadId", u.upload_id)
            _sub(el, "Initiated", _iso(u.initiated))
            _sub(el, "StorageClass", "STANDARD")
        return _xml(root)


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class _Expectations:
    """The digests a client sent for a body (headers now, trailers when the body has ended)."""

    content_md5: bytes | None
    sha256_hex: str | None
    header_checksums: dict[str, str]
    trailer_algorithms: list[str]
    requested: str

    @classmethod
    def from_request(cls, req: S3Request) -> _Expectations:
        md5 = req.header("content-md5")
        sha = req.header("x-amz-content-sha256", "") or ""
        header_checksums = {alg: v.strip() for alg in CHECKSUM_ALGORITHMS if (v := req.header(f"x-amz-checksum-{alg}"))}
        trailers = [t.strip().lower() for t in (req.header("x-amz-trailer") or "").split(",") if t.strip()]
        trailer_algorithms = [t.removeprefix("x-amz-checksum-") for t in trailers if t.startswith("x-amz-checksum-")]
        return cls(
            content_md5=decode_content_md5(md5) if md5 is not None else None,
            sha256_hex=sha if re.fullmatch(r"[0-9a-fA-F]{64}", sha) else None,
            header_checksums=header_checksums,
            trailer_algorithms=trailer_algorithms,
            requested=(req.header("x-amz-sdk-checksum-algorithm") or "").lower(),
        )

    def writer_options(self) -> dict[str, Any]:
        algorithms = {*self.header_checksums, *self.trailer_algorithms}
        if self.requested in CHECKSUM_ALGORITHMS:
            algorithms.add(self.requested)
        return {"sha256": self.sha256_hex is not None, "checksums": tuple(sorted(algorithms))}

    def verify(self, req: S3Request, writer: ObjectWriter) -> dict[str, str]:
        checksums = dict(self.header_checksums)
        trailers = req.body.decoder.trailers if req.body.decoder is not None else {}
        for alg in self.trailer_algorithms:
            value = trailers.get(f"x-amz-checksum-{alg}")
            if value is None:
                raise IncompleteBody(f"The x-amz-checksum-{alg} trailer announced in x-amz-trailer was not sent.")
            checksums[alg] = value
        return writer.verify(content_md5=self.content_md5, sha256_hex=self.sha256_hex, checksums=checksums)

    def reported(self, stored: dict[str, str]) -> dict[str, str]:
        """Checksums to echo: those the client sent or asked for."""
        wanted = {*self.header_checksums, *self.trailer_algorithms, self.requested}
        return {alg: v for alg, v in stored.items() if alg in wanted}


def _checksum_headers(checksums: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"x-amz-checksum-{alg}", value) for alg, value in checksums.items()]


def _check_conditions(req: S3Request, meta: ObjectMeta) -> bool:
    """Raise PreconditionFailed, or return True for 304 Not Modified."""
    if_match, if_none_match = req.header("if-match"), req.header("if-none-match")
    if if_match is not None and not _etag_matches(if_match, meta.etag):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold", Condition="If-Match")
    unmodified_since = _parse_http_date(req.header("if-unmodified-since"))
    if if_match is None and unmodified_since is not None and int(meta.mtime) > unmodified_since:
        raise PreconditionFailed(
            "At least one of the pre-conditions you specified did not hold", Condition="If-Unmodified-Since"
        )
    if if_none_match is not None:
        return _etag_matches(if_none_match, meta.etag)
    modified_since = _parse_http_date(req.header("if-modified-since"))
    return modified_since is not None and int(meta.mtime) <= modified_since


def _copy_source(value: str) -> tuple[str, str]:
    path = value.split("?versionId=", 1)[0]
    path = unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise InvalidArgument("Invalid copy source object key", ArgumentName="x-amz-copy-source", ArgumentValue=value)
    return bucket, key


def _encode_token(last: str, is_prefix: bool) -> str:
    raw = json.dumps({"a": last, "p": is_prefix}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[str, str]:
    """(start after, common prefix to skip)."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        last, is_prefix = str(doc["a"]), bool(doc["p"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        ) from None
    return (last, last) if is_prefix else (last, "")


def _has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in headers


async def _wait_disconnect(receive: Any) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
