"""The IAM permissions an S3 request needs, per operation, as AWS documents them: one table for the
embedded S3 API (routing.dispatch) and the proxy to a configured S3 (proxy.py), so a key's
``permissions`` mean the same whichever serves the request."""

from __future__ import annotations

from modelhost.server.s3.objects import copy_source


def required(
    method: str, bucket: str | None, key: str | None, query: dict[str, str], headers: dict[str, str]
) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) pairs the request needs; [] for a request no operation serves
    (the caller answers it MethodNotAllowed)."""
    if bucket is None:
        return [("s3:ListAllMyBuckets", "*")] if method in ("GET", "HEAD") else []
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if key is None:
        if method == "GET":
            for sub, action in (
                ("location", "s3:GetBucketLocation"),
                ("uploads", "s3:ListBucketMultipartUploads"),
                ("versioning", "s3:GetBucketVersioning"),
            ):
                if sub in query:
                    return [(action, bucket_arn)]
            return [("s3:ListBucket", bucket_arn)]
        if method == "HEAD":
            return [("s3:ListBucket", bucket_arn)]
        if method == "PUT":
            return [("s3:CreateBucket", bucket_arn)]
        if method == "DELETE":
            return [("s3:DeleteBucket", bucket_arn)]
        if method == "POST" and "delete" in query:
            return [("s3:DeleteObject", f"{bucket_arn}/*")]  # DeleteObjects: each key is a DeleteObject
        return []
    object_arn = f"{bucket_arn}/{key}"
    if method == "PUT":  # PutObject, UploadPart (IAM: PutObject), CopyObject / UploadPartCopy (+ GetObject)
        needs = [("s3:PutObject", object_arn)]
        if "x-amz-copy-source" in headers:
            src_bucket, src_key = copy_source(headers["x-amz-copy-source"])
            needs.append(("s3:GetObject", f"arn:aws:s3:::{src_bucket}/{src_key}"))
        return needs
    if method in ("GET", "HEAD"):
        if method == "GET" and "uploadId" in query:
            return [("s3:ListMultipartUploadParts", object_arn)]
        return [("s3:GetObject", object_arn)]
    if method == "DELETE":
        return [("s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject", object_arn)]
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return [("s3:PutObject", object_arn)]  # IAM: multipart create/complete are PutObject
    return []
