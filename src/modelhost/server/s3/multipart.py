"""Multipart upload operations: create, upload part (and part copy), complete, abort, list parts, list uploads."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from modelhost.server.s3.checksums import CHECKSUM_TAG, CHECKSUM_XML, Expectations, checksum_headers
from modelhost.server.s3.objects import attrs_from_headers, copy_source, receive_into
from modelhost.server.s3.request import S3Request, Stores
from modelhost.server.s3.xml import (
    MALFORMED,
    OWNER_ID,
    OWNER_NAME,
    MalformedXML,
    Reply,
    element,
    iso,
    parse_xml,
    quoted,
    sub,
    xml_reply,
)
from modelhost.store.buckets import InvalidArgument
from modelhost.store.multipart import Upload, check_part_number


async def create_multipart_upload(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    attrs = attrs_from_headers(req.headers)
    algorithm = (req.header("x-amz-checksum-algorithm") or "").lower()
    upload = await asyncio.to_thread(ctx.uploads.create, bucket, key, attrs, algorithm)
    root = element("InitiateMultipartUploadResult")
    sub(root, "Bucket", bucket)
    sub(root, "Key", key)
    sub(root, "UploadId", upload.upload_id)
    reply = xml_reply(root)
    if algorithm:
        reply.headers.append(("x-amz-checksum-algorithm", algorithm.upper()))
    return reply


async def _upload(ctx: Stores, req: S3Request) -> tuple[Upload, int]:
    bucket, key = req.names()
    number = check_part_number(req.query.get("partNumber", ""))
    upload = await asyncio.to_thread(ctx.uploads.get, bucket, key, req.query.get("uploadId", ""))
    return upload, number


async def upload_part(ctx: Stores, req: S3Request) -> Reply:
    upload, number = await _upload(ctx, req)
    expect = Expectations.from_request(req)
    writer = await asyncio.to_thread(ctx.uploads.new_part_writer, upload, **expect.writer_options())
    try:
        await receive_into(req, writer)
        checksums = await asyncio.to_thread(expect.verify, req, writer)
        part = await asyncio.to_thread(ctx.uploads.commit_part, upload, number, writer, checksums)
    except BaseException:
        await asyncio.to_thread(writer.discard)
        raise
    return Reply(200, [("etag", quoted(part.etag)), *checksum_headers(expect.reported(checksums))])


async def upload_part_copy(ctx: Stores, req: S3Request) -> Reply:
    upload, number = await _upload(ctx, req)
    src_bucket, src_key = copy_source(req.headers["x-amz-copy-source"])
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
    part = await asyncio.to_thread(ctx.uploads.copy_part, upload, number, src_bucket, src_key, first, last)
    root = element("CopyPartResult")
    sub(root, "LastModified", iso(part.mtime))
    sub(root, "ETag", quoted(part.etag))
    return xml_reply(root)


async def complete_multipart_upload(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    upload = await asyncio.to_thread(ctx.uploads.get, bucket, key, req.query.get("uploadId", ""))
    root = parse_xml(await req.body.read())
    if root.tag != "CompleteMultipartUpload":
        raise MalformedXML(MALFORMED)
    parts: list[tuple[int, str, dict[str, str]]] = []
    for el in root.findall("Part"):
        number, etag = (el.findtext("PartNumber") or "").strip(), (el.findtext("ETag") or "").strip()
        if not number.isdigit() or not etag:
            raise MalformedXML(MALFORMED)
        checksums = {alg: v.strip() for tag, alg in CHECKSUM_XML.items() if (v := el.findtext(tag))}
        parts.append((int(number), etag, checksums))
    meta = await asyncio.to_thread(ctx.uploads.complete, upload, parts)
    out = element("CompleteMultipartUploadResult")
    sub(out, "Location", f"/{bucket}/{quote(key)}")
    sub(out, "Bucket", bucket)
    sub(out, "Key", key)
    sub(out, "ETag", quoted(meta.etag))
    return xml_reply(out)


async def abort_multipart_upload(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    upload = await asyncio.to_thread(ctx.uploads.get, bucket, key, req.query.get("uploadId", ""))
    await asyncio.to_thread(ctx.uploads.abort, upload)
    return Reply(204)


async def list_parts(ctx: Stores, req: S3Request) -> Reply:
    bucket, key = req.names()
    upload = await asyncio.to_thread(ctx.uploads.get, bucket, key, req.query.get("uploadId", ""))
    parts = await asyncio.to_thread(ctx.uploads.parts, upload)
    try:
        marker = int(req.query.get("part-number-marker", "0") or 0)
        max_parts = min(int(req.query.get("max-parts", "1000")), 1000)
    except ValueError:
        raise InvalidArgument("Invalid part-number-marker or max-parts.") from None
    remaining = [p for p in parts if p.number > marker]
    page, truncated = remaining[:max_parts], len(remaining) > max_parts
    root = element("ListPartsResult")
    sub(root, "Bucket", bucket)
    sub(root, "Key", key)
    sub(root, "UploadId", upload.upload_id)
    sub(root, "PartNumberMarker", marker)
    if page:
        sub(root, "NextPartNumberMarker", page[-1].number)
    sub(root, "MaxParts", max_parts)
    sub(root, "IsTruncated", truncated)
    for p in page:
        el = sub(root, "Part")
        sub(el, "PartNumber", p.number)
        sub(el, "LastModified", iso(p.mtime))
        sub(el, "ETag", quoted(p.etag))
        sub(el, "Size", p.size)
        for alg, value in p.checksums.items():
            if alg in CHECKSUM_TAG:
                sub(el, CHECKSUM_TAG[alg], value)
    owner = sub(root, "Owner")
    sub(owner, "ID", OWNER_ID)
    sub(owner, "DisplayName", OWNER_NAME)
    sub(root, "StorageClass", "STANDARD")
    if upload.checksum_algorithm:
        sub(root, "ChecksumAlgorithm", upload.checksum_algorithm.upper())
    return xml_reply(root)


async def list_multipart_uploads(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    prefix = req.query.get("prefix", "")
    uploads = await asyncio.to_thread(ctx.uploads.list_uploads, req.bucket, prefix)
    root = element("ListMultipartUploadsResult")
    sub(root, "Bucket", req.bucket)
    sub(root, "KeyMarker", "")
    sub(root, "UploadIdMarker", "")
    sub(root, "Prefix", prefix)
    sub(root, "MaxUploads", 1000)
    sub(root, "IsTruncated", False)
    for u in uploads:
        el = sub(root, "Upload")
        sub(el, "Key", u.key)
        sub(el, "UploadId", u.upload_id)
        sub(el, "Initiated", iso(u.initiated))
        sub(el, "StorageClass", "STANDARD")
    return xml_reply(root)
