"""Bucket operations (list, create, head, delete, location, versioning) and object listing (v1 and v2)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any
from urllib.parse import quote

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
from modelhost.store.buckets import BucketAlreadyOwnedByYou, InvalidArgument, ObjectMeta

MAX_LIST_KEYS = 1000
HIGHEST = "\U0010ffff"  # sorts after every character a key can continue with


async def list_buckets(ctx: Stores, req: S3Request) -> Reply:
    buckets = await asyncio.to_thread(ctx.store.list_buckets)
    prefix = req.query.get("prefix", "")
    root = element("ListAllMyBucketsResult")
    owner = sub(root, "Owner")
    sub(owner, "ID", OWNER_ID)
    sub(owner, "DisplayName", OWNER_NAME)
    container = sub(root, "Buckets")
    for b in buckets:
        if b.name.startswith(prefix):
            el = sub(container, "Bucket")
            sub(el, "Name", b.name)
            sub(el, "CreationDate", iso(b.created))
            sub(el, "BucketRegion", b.location or ctx.region)
    if prefix:
        sub(root, "Prefix", prefix)
    return xml_reply(root)


async def create_bucket(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    body = await req.body.read()
    location = ""
    if body.strip():
        root = parse_xml(body)
        if root.tag != "CreateBucketConfiguration":
            raise MalformedXML(MALFORMED)
        location = (root.findtext("LocationConstraint") or "").strip()
    try:
        await asyncio.to_thread(ctx.store.create_bucket, req.bucket, location)
    except BucketAlreadyOwnedByYou:
        # S3's legacy rule in us-east-1: re-creating a bucket you own there answers 200 OK (the
        # sagemaker SDK's default-bucket race relies on it); every other region answers 409.
        existing = await asyncio.to_thread(ctx.store.head_bucket, req.bucket)
        if not (ctx.region == US_EAST_1 and location in ("", US_EAST_1) and existing.location in ("", US_EAST_1)):
            raise
    return Reply(200, [("location", f"/{req.bucket}")])


US_EAST_1 = "us-east-1"


async def head_bucket(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    bucket = await asyncio.to_thread(ctx.store.head_bucket, req.bucket)
    return Reply(
        200,
        [
            ("x-amz-bucket-region", bucket.location or ctx.region),
            ("x-amz-access-point-alias", "false"),
            ("content-type", "application/xml"),
        ],
    )


async def delete_bucket(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    bucket = req.bucket

    def delete() -> None:
        ctx.store.delete_bucket(bucket)
        ctx.uploads.abort_bucket(bucket)  # unfinished uploads die with their bucket

    await asyncio.to_thread(delete)
    return Reply(204)


async def get_bucket_location(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    bucket = await asyncio.to_thread(ctx.store.head_bucket, req.bucket)
    root = element("LocationConstraint")
    if bucket.location and bucket.location != "us-east-1":
        root.text = bucket.location
    return xml_reply(root)


async def get_bucket_versioning(ctx: Stores, req: S3Request) -> Reply:
    assert req.bucket is not None
    await asyncio.to_thread(ctx.store.head_bucket, req.bucket)
    return xml_reply(element("VersioningConfiguration"))


async def list_objects(ctx: Stores, req: S3Request, v2: bool) -> Reply:
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
            after, skip_cp = decode_token(token)
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
        it = ctx.store.iter_keys(bucket, prefix, start_after)
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
                it = ctx.store.iter_keys(bucket, prefix, cp + HIGHEST)  # skip the rest of it
            else:
                found.append((key, st))
                order.append(("key", key))
        return ctx.store.describe_many(bucket, found), prefixes, order, truncated

    objects, prefixes, order, truncated = await asyncio.to_thread(page)

    def enc(value: str) -> str:
        return quote(value, safe="/") if encoding == "url" else value

    root = element("ListBucketResult")
    sub(root, "Name", bucket)
    sub(root, "Prefix", enc(prefix))
    if v2:
        if token is not None:
            sub(root, "ContinuationToken", token)
        if q.get("start-after"):
            sub(root, "StartAfter", enc(q["start-after"]))
        sub(root, "KeyCount", len(order))
    else:
        sub(root, "Marker", enc(after))
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", truncated)
    if truncated and order:
        kind, last = order[-1]
        if v2:
            sub(root, "NextContinuationToken", encode_token(last, kind == "cp"))
        else:
            sub(root, "NextMarker", enc(last))
    fetch_owner = not v2 or q.get("fetch-owner") == "true"
    for meta in objects:
        el = sub(root, "Contents")
        sub(el, "Key", enc(meta.key))
        sub(el, "LastModified", iso(meta.mtime))
        sub(el, "ETag", quoted(meta.etag))
        for alg in meta.attrs.checksums:
            sub(el, "ChecksumAlgorithm", alg.upper())
        sub(el, "Size", meta.size)
        if fetch_owner:
            owner = sub(el, "Owner")
            sub(owner, "ID", OWNER_ID)
            sub(owner, "DisplayName", OWNER_NAME)
        sub(el, "StorageClass", "STANDARD")
    for cp in prefixes:
        sub(sub(root, "CommonPrefixes"), "Prefix", enc(cp))
    return xml_reply(root)


def encode_token(last: str, is_prefix: bool) -> str:
    raw = json.dumps({"a": last, "p": is_prefix}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(token: str) -> tuple[str, str]:
    """(start after, common prefix to skip)."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        last, is_prefix = str(doc["a"]), bool(doc["p"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        ) from None
    return (last, last) if is_prefix else (last, "")
