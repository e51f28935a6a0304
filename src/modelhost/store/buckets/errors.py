"""S3's error codes as exceptions (the wire layer maps each code to its HTTP status)."""

from __future__ import annotations


class S3StoreError(Exception):
    code = "InternalError"

    def __init__(self, message: str, **fields: str) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


def error_class(code: str) -> type[S3StoreError]:
    return type(code, (S3StoreError,), {"code": code})


NoSuchBucket = error_class("NoSuchBucket")
NoSuchKey = error_class("NoSuchKey")
NoSuchUpload = error_class("NoSuchUpload")
BucketAlreadyOwnedByYou = error_class("BucketAlreadyOwnedByYou")
BucketNotEmpty = error_class("BucketNotEmpty")
InvalidBucketName = error_class("InvalidBucketName")
InvalidArgument = error_class("InvalidArgument")
InvalidRequest = error_class("InvalidRequest")
KeyTooLongError = error_class("KeyTooLongError")
BadDigest = error_class("BadDigest")
InvalidDigest = error_class("InvalidDigest")
XAmzContentSHA256Mismatch = error_class("XAmzContentSHA256Mismatch")
InvalidPart = error_class("InvalidPart")
InvalidPartOrder = error_class("InvalidPartOrder")
EntityTooSmall = error_class("EntityTooSmall")
PreconditionFailed = error_class("PreconditionFailed")
