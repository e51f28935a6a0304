"""Bucket names and object keys: S3's rules for new buckets, and what a file-backed store can hold."""

from __future__ import annotations

import re

from modelhost.store.buckets.errors import InvalidArgument, InvalidBucketName, KeyTooLongError

MAX_KEY_BYTES = 1024

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
LEGACY_BUCKET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_new_bucket_name(name: str) -> None:
    """S3's rules for new buckets (general purpose, any region)."""
    if (
        not _BUCKET.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IPV4.fullmatch(name)
        or name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    ):
        raise InvalidBucketName("The specified bucket is not valid.", BucketName=name)


def check_bucket_name(name: str) -> None:
    """Existing buckets may carry legacy names (us-east-1 allowed upper case and ``_``; bucket
    dirs can be made by hand): refuse only what is unsafe as a directory name."""
    if not LEGACY_BUCKET.fullmatch(name):
        raise InvalidBucketName("The specified bucket is not valid.", BucketName=name)


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLongError("Your key is too long", Key=key[:64] + "...")
    for part in key.split("/"):
        if part in ("", ".", "..") or "\0" in part or len(part.encode("utf-8", "surrogatepass")) > 255:
            raise InvalidArgument(
                "The local bucket store keeps objects as files: keys may not have empty, '.' or '..' "
                "path segments (a leading, doubled or trailing '/') or segments over 255 bytes.",
                ArgumentName="key",
                ArgumentValue=key,
            )
