"""Object operations: Put, Get/Head (ranges, conditions, response overrides), Copy, Delete, DeleteObjects."""

from __future__ import annotations

import asyncio
import re
import shutil
from email.utils import parsedate_to_datetime
from typing import IO
from urllib.parse import unquote

from modelhost.server.s3.checksums import Expectations, checksum_headers
from modelhost.server.s3.request import S3Request, Stores
from modelhost.server.s3.xml import (
    MALFORMED,
    IncompleteBody,
    InvalidRange,
    MalformedXML,
    MissingContentLength,
    Reply,
    element,
    http_date,
    iso,
    parse_xml,
    quoted,
    sub,
    xml_reply,
)
from modelhost.store.buckets import (
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
    error_class,
)

WRITE_BATCH = 1024 * 1024  # bytes handed to the writer thread at a time
MAX_PUT_SIZE = 5 * 1024**3  # S3's single PUT (and part) maximum: 5 GiB
EntityTooLarge = error_class("EntityTooLarge")
MAX_DELETE_KEYS = 1000
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


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


def attrs_from_headers(headers: dict[str, str]) -> ObjectAttrs:
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
        ("etag", quoted(meta.etag)),
        ("last-modified", http_date(meta.mtime)),
        ("accept-ranges", "bytes"),
        ("content-type", meta.attrs.content_type),
    ]
    headers += list(meta.attrs.headers.items())
    headers += [(f"x-amz-meta-{k}", v) for k, v in meta.attrs.user.items()]
    if "-" in meta.etag:
        headers.append(("x-amz-mp-parts-count", meta.etag.rsplit("-", 1)[1]))
    return headers


def check_put_size(store: BucketStore, headers: dict[str, str], chunked: bool) -> None:
    """Refuse an upload by its declared size before reading it: over 5 GiB as S3 does
    (``EntityTooLarge``, 400), and over the free space under the data dir. S3 has no code for a
    full disk; ``EntityTooLarge`` (400) is its closest ("your proposed upload exceeds the maximum
    allowed size"), with the free bytes as ``MaxSizeAllowed``, so a client does not retry in vain."""
    declared = headers.get("x-amz-decoded-content-length") if chunked else headers.get("content-length")
    if not declared or not declared.isdigit() or "x-amz-copy-source" in headers:
        return
    size = int(declared)
    if size > MAX_PUT_SIZE:
        raise EntityTooLarge(
            "Your proposed upload exceeds the maximum allowed size",
            ProposedSize=str(size),
            MaxSizeAllowed=str(MAX_PUT_SIZE),
        )
    if size > WRITE_BATCH:
        free = shutil.disk_usage(store.tmp_dir).free
        if size > free:
            raise EntityTooLarge(
                f"Your proposed upload exceeds the maximum allowed size: the server has {free} bytes of free disk "
                "space under its data directory.",
                ProposedSize=str(size),
                MaxSizeAllowed=str(free),
            )


async def put_object(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    attrs = attrs_from_headers(req.headers)
    expect = Expectations.from_request(req)
    writer = await asyncio.to_thread(ctx.store.new_writer, bucket, key, **expect.writer_options())
    try:
        await receive_into(req, writer)
        attrs.checksums = await asyncio.to_thread(expect.verify, req, writer)
        meta = await asyncio.to_thread(
            ctx.store.commit,
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
    return Reply(200, [("etag", quoted(meta.etag)), *checksum_headers(expect.reported(attrs.checksums))])


async def receive_into(req: S3Request, writer: ObjectWriter) -> None:
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
    if req.body.decoder is not None and declared is not None and declared.isdigit() and int(declared) != writer.size:
        raise IncompleteBody(
            "You did not provide the number of bytes specified by the x-amz-decoded-content-length header."
        )


async def get_object(ctx: Stores, req: S3Request, head: bool) -> Reply:
    bucket, key = req.names()
    f: IO[bytes] | None = None
    if head:
        meta = await asyncio.to_thread(ctx.store.head_object, bucket, key)
    else:
        meta, f = await asyncio.to_thread(ctx.store.open_object, bucket, key)
    try:
        headers = _object_headers(meta)
        not_modified = _check_conditions(req, meta)
        if not_modified:
            if f is not None:
                f.close()
            return Reply(304, [h for h in headers if h[0] in ("etag", "last-modified")])
        rng = parse_range(req.header("range"), meta.size)
        if (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED" and rng is None and "-" not in meta.etag:
            headers += checksum_headers(meta.attrs.checksums)
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


async def copy_object(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    src_bucket, src_key = copy_source(req.headers["x-amz-copy-source"])
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
    attrs = attrs_from_headers(req.headers) if directive == "REPLACE" else None
    meta = await asyncio.to_thread(ctx.store.copy_object, src_bucket, src_key, bucket, key, attrs)
    root = element("CopyObjectResult")
    sub(root, "LastModified", iso(meta.mtime))
    sub(root, "ETag", quoted(meta.etag))
    return xml_reply(root)


async def delete_object(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    await asyncio.to_thread(ctx.store.delete_object, bucket, key)
    return Reply(204)


async def delete_objects(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    bucket = req.bucket
    expect = Expectations.from_request(req)
    body = await req.body.read()
    if expect.content_md5 is not None:
        import hashlib

        if hashlib.md5(body).digest() != expect.content_md5:
            raise error_class("BadDigest")("The Content-MD5 you specified did not match what we received.")
    root = parse_xml(body)
    objects = root.findall("Object") if root.tag == "Delete" else []
    keys = [o.findtext("Key") for o in objects]
    if not objects or len(objects) > MAX_DELETE_KEYS or any(k is None for k in keys):
        raise MalformedXML(MALFORMED)
    quiet = (root.findtext("Quiet") or "").strip().lower() == "true"

    def delete_all() -> list[tuple[str, S3StoreError | None]]:
        ctx.store.bucket_dir(bucket)
        results: list[tuple[str, S3StoreError | None]] = []
        for k in keys:
            assert k is not None
            try:
                ctx.store.delete_object(bucket, k)
                results.append((k, None))
            except S3StoreError as err:
                if err.code == "NoSuchBucket":
                    raise
                results.append((k, err))
        return results

    results = await asyncio.to_thread(delete_all)
    out = element("DeleteResult")
    for k, err in results:
        if err is None:
            if not quiet:
                sub(sub(out, "Deleted"), "Key", k)
        else:
            el = sub(out, "Error")
            sub(el, "Key", k)
            sub(el, "Code", err.code)
            sub(el, "Message", err.message)
    return xml_reply(out)


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


def copy_source(value: str) -> tuple[str, str]:
    path = value.split("?versionId=", 1)[0]
    path = unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise InvalidArgument("Invalid copy source object key", ArgumentName="x-amz-copy-source", ArgumentValue=value)
    return bucket, key
