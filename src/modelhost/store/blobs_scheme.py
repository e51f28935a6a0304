"""The one place that looks at a URI's scheme: ``s3://`` goes to the store's S3 part (the embedded
bucket store or a real S3 service), everything else to local files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from modelhost.store.blobs import BlobError, BlobInfo, BlobReader, BlobStore, is_s3
from modelhost.store.blobs_files import FileBlobs


def missing_bucket(bucket: str) -> BlobError:
    """The error for a bucket that does not exist (the same text from either S3 part)."""
    return BlobError(f"The bucket {bucket} does not exist.")


class SchemeBlobStore:
    """A BlobStore made of an S3 part and the local-file part."""

    def __init__(self, s3: BlobStore, files: FileBlobs) -> None:
        self.s3 = s3
        self.files = files

    def _part(self, uri: str) -> BlobStore:
        return self.s3 if is_s3(uri) else self.files

    def stat(self, uri: str) -> BlobInfo:
        return self._part(uri).stat(uri)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        return self._part(prefix).list(prefix)

    def open(self, uri: str) -> BlobReader:
        return self._part(uri).open(uri)

    def local_path(self, uri: str) -> Path:
        return self._part(uri).local_path(uri)

    def check_writable(self, uri: str) -> None:
        self._part(uri).check_writable(uri)

    def staging_dir(self) -> Path:
        return self.s3.staging_dir()

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        self._part(uri).put_bytes(uri, data, content_type)

    def put_file(self, uri: str, path: Path, content_type: str | None = None, md5: str | None = None) -> None:
        self._part(uri).put_file(uri, path, content_type, md5)

    def delete(self, uri: str) -> None:
        self._part(uri).delete(uri)

    def batch(self) -> AbstractContextManager[None]:
        return self.s3.batch()  # (local files have no metadata to share)

    def batch_now(self) -> AbstractContextManager[bool]:
        return self.s3.batch_now()  # (as ``batch``: local files have no metadata to share)
