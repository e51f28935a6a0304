"""Multipart uploads for the embedded bucket store.

``<data-dir>/uploads/<upload-id>/`` holds ``upload.json`` (bucket, key, initiation time, the
metadata the object will get) and, per part, ``part-NNNNN`` (the bytes, moved in only after the
part was received whole and verified) and ``part-NNNNN.json`` (ETag, size, checksums). Complete
concatenates the named parts into a temp file and commits it like a PutObject (atomic rename),
then removes the upload directory; Abort removes it. Until Complete succeeds there is no object.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.store.buckets import (
    COPY_CHUNK,
    BucketStore,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRequest,
    NoSuchUpload,
    ObjectAttrs,
    ObjectMeta,
    ObjectWriter,
)

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    attrs: ObjectAttrs
    checksum_algorithm: str


@dataclass
class Part:
    number: int
    etag: str
    size: int
    mtime: float
    checksums: dict[str, str]


def check_part_number(value: str | int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= MAX_PART_NUMBER:
        raise InvalidArgument(
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=str(value),
        )
    return number


class MultipartUploads:
    def __init__(self, store: BucketStore, uploads_dir: Path) -> None:
        self.store = store
        self.dir = uploads_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, upload_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(upload_id, threading.Lock())

    def _upload_dir(self, upload_id: str) -> Path:
        return self.dir / upload_id

    def create(self, bucket: str, key: str, attrs: ObjectAttrs, checksum_algorithm: str = "") -> Upload:
        self.store.object_path(bucket, key)  # bucket exists, key is storable
        upload_id = secrets.token_urlsafe(48)
        path = self._upload_dir(upload_id)
        path.mkdir(parents=True)
        upload = Upload(upload_id, bucket, key, time.time(), attrs, checksum_algorithm)
        _write_json(
            path / "upload.json",
            {
                "bucket": bucket,
                "key": key,
                "initiated": upload.initiated,
                "content_type": attrs.content_type,
                "attrs": attrs.to_json(),
                "checksum_algorithm": checksum_algorithm,
            },
        )
        return upload

    def get(self, bucket: str, key: str, upload_id: str) -> Upload:
        self.store.bucket_dir(bucket)
        doc = None
        if _UPLOAD_ID.fullmatch(upload_id):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError, ValueError):
                doc = json.loads((self._upload_dir(upload_id) / "upload.json").read_text())
        if doc is None or doc["bucket"] != bucket or doc["key"] != key:
            raise NoSuchUpload(
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
                "aborted or completed.",
                UploadId=upload_id,
            )
        return Upload(
            upload_id,
            bucket,
            key,
            doc["initiated"],
            ObjectAttrs.from_row(doc["content_type"], doc["attrs"]),
            doc.get("checksum_algorithm", ""),
        )

    def new_part_writer(self, upload: Upload, **kwargs: Any) -> ObjectWriter:
        return ObjectWriter(self.store.tmp_dir, **kwargs)

    def commit_part(self, upload: Upload, number: int, writer: ObjectWriter, checksums: dict[str, str]) -> Part:
        path = self._upload_dir(upload.upload_id)
        etag = writer.md5.hexdigest()
        with self._lock(upload.upload_id):
            if not (path / "upload.json").exists():  # aborted or completed meanwhile
                writer.discard()
                raise NoSuchUpload("The specified upload does not exist.", UploadId=upload.upload_id)
            os.replace(writer.path, path / f"part-{number:05d}")
            st = (path / f"part-{number:05d}").stat()
            _write_json(
                path / f"part-{number:05d}.json",
                {"etag": etag, "size": st.st_size, "mtime": st.st_mtime, "checksums": checksums},
            )
        return Part(number, etag, st.st_size, st.st_mtime, checksums)

    def copy_part(
        self,
        upload: Upload,
        number: int,
        src_bucket: str,
        src_key: str,
        first: int | None = None,
        last: int | None = None,
    ) -> Part:
        """UploadPartCopy: a byte range (inclusive) of an existing object becomes a part."""
        meta, f = self.store.open_object(src_bucket, src_key)
        writer = self.new_part_writer(upload)
        try:
            with f:
                start, end = (0, meta.size - 1) if first is None or last is None else (first, last)
                if start > end or end >= meta.size:
                    raise InvalidArgument(
                        "The x-amz-copy-source-range value must be of the form bytes=first-last "
                        "where first and last are the zero-based offsets of the first and last "
                        "bytes to copy",
                        ArgumentName="x-amz-copy-source-range",
                    )
                f.seek(start)
                remaining = end - start + 1
                while remaining > 0 and (chunk := f.read(min(COPY_CHUNK, remaining))):
                    writer.write(chunk)
                    remaining -= len(chunk)
            writer.close()
        except BaseException:
            writer.discard()
            raise
        return self.commit_part(upload, number, writer, {})

    def parts(self, upload: Upload) -> list[Part]:
        path = self._upload_dir(upload.upload_id)
        out = []
        for p in sorted(path.glob("part-*.json")):
            with contextlib.suppress(FileNotFoundError, ValueError):
                doc = json.loads(p.read_text())
                out.append(Part(int(p.name[5:10]), doc["etag"], doc["size"], doc["mtime"], doc.get("checksums", {})))
        return out

    def complete(self, upload: Upload, requested: list[tuple[int, str, dict[str, str]]]) -> ObjectMeta:
        """Assemble the named parts (number, ETag without quotes, checksums sent) into the object."""
        path = self._upload_dir(upload.upload_id)
        with self._lock(upload.upload_id):
            self.get(upload.bucket, upload.key, upload.upload_id)  # still there?
            if not requested:
                raise InvalidRequest("You must specify at least one part")
            numbers = [n for n, _, _ in requested]
            if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
                raise InvalidPartOrder(
                    "The list of parts was not in ascending order. The parts list must be "
                    "specified in order by part number.",
                    UploadId=upload.upload_id,
                )
            stored = {p.number: p for p in self.parts(upload)}
            chosen: list[Part] = []
            for number, etag, checksums in requested:
                part = stored.get(number)
                if (
                    part is None
                    or part.etag != etag.strip('"')
                    or any(part.checksums.get(alg) not in (None, value) for alg, value in checksums.items())
                ):
                    raise InvalidPart(
                        "One or more of the specified parts could not be found. The part may not have been "
                        "uploaded, or the specified entity tag may not match the part's entity tag.",
                        UploadId=upload.upload_id,
                        PartNumber=str(number),
                        ETag=etag,
                    )
                chosen.append(part)
            for part in chosen[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise EntityTooSmall(
                        "Your proposed upload is smaller than the minimum allowed object size.",
                        ProposedSize=str(part.size),
                        MinSizeAllowed=str(MIN_PART_SIZE),
                        PartNumber=str(part.number),
                        ETag=part.etag,
                    )
            digests = hashlib.md5()
            writer = ObjectWriter(self.store.tmp_dir)
            try:
                for part in chosen:
                    digests.update(bytes.fromhex(part.etag))
                    with open(path / f"part-{part.number:05d}", "rb") as f:
                        while chunk := f.read(COPY_CHUNK):
                            writer.file.write(chunk)
                writer.close()
            except BaseException:
                writer.discard()
                raise
            etag = f"{digests.hexdigest()}-{len(chosen)}"
            meta = self.store.commit(upload.bucket, upload.key, writer.path, etag, upload.attrs)
            shutil.rmtree(path, ignore_errors=True)
        with self._guard:
            self._locks.pop(upload.upload_id, None)
        return meta

    def abort(self, upload: Upload) -> None:
        with self._lock(upload.upload_id):
            shutil.rmtree(self._upload_dir(upload.upload_id), ignore_errors=True)
        with self._guard:
            self._locks.pop(upload.upload_id, None)

    def list_uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        self.store.bucket_dir(bucket)
        return [u for u in self._uploads_of(bucket) if u.key.startswith(prefix)]

    def _uploads_of(self, bucket: str) -> list[Upload]:
        out = []
        for p in self.dir.glob("*/upload.json"):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                doc = json.loads(p.read_text())
                if doc["bucket"] == bucket:
                    out.append(
                        Upload(
                            p.parent.name,
                            bucket,
                            doc["key"],
                            doc["initiated"],
                            ObjectAttrs.from_row(doc["content_type"], doc["attrs"]),
                            doc.get("checksum_algorithm", ""),
                        )
                    )
        return sorted(out, key=lambda u: (u.key, u.initiated))

    def abort_bucket(self, bucket: str) -> None:
        for upload in self._uploads_of(bucket):
            self.abort(upload)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
