"""Safe, cached extraction of model artifacts."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from modelhost.store.artifacts import ArtifactCache, ArtifactError
from modelhost.store.blobs import BlobError
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore
from tests.helpers import tarball


def _cache(tmp_path: Path) -> tuple[ArtifactCache, LocalBlobStore]:
    buckets = BucketStore(tmp_path / "buckets", tmp_path)
    for bucket in ("models", "m"):  # bucket dirs made by hand ("m" is a legacy name)
        (tmp_path / "buckets" / bucket).mkdir()
    objects = LocalBlobStore(buckets)
    return ArtifactCache(objects, tmp_path / "cache"), objects


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return out.getvalue()


def test_extracts_once_and_reuses(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    objects.put_bytes("s3://models/a/model.tar.gz", tarball({"model.joblib": b"x", "code/inference.py": "pass"}))
    first = cache.materialize("s3://models/a/model.tar.gz")
    assert (first / "model.joblib").read_bytes() == b"x"
    assert (first / "code" / "inference.py").read_text() == "pass"
    assert cache.materialize("s3://models/a/model.tar.gz") == first
    # a new upload under the same key is a new artifact
    objects.put_bytes("s3://models/a/model.tar.gz", tarball({"model.joblib": b"yy"}))
    second = cache.materialize("s3://models/a/model.tar.gz")
    assert second != first and (second / "model.joblib").read_bytes() == b"yy"


def test_refuses_parent_traversal(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    objects.put_bytes("s3://m/evil.tar.gz", tarball({"../evil.txt": b"pwned"}))
    with pytest.raises(ArtifactError, match="unsafe archive member"):
        cache.materialize("s3://m/evil.tar.gz")
    assert not (tmp_path / "cache" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-extracted directory left


def test_refuses_absolute_symlink_and_device(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    link = tarfile.TarInfo("model.joblib")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    objects.put_bytes("s3://m/link.tar.gz", _tar_with(link))
    with pytest.raises(ArtifactError, match="unsafe archive member"):
        cache.materialize("s3://m/link.tar.gz")
    dev = tarfile.TarInfo("null")
    dev.type = tarfile.CHRTYPE
    objects.put_bytes("s3://m/dev.tar.gz", _tar_with(dev))
    with pytest.raises(ArtifactError, match="unsafe archive member"):
        cache.materialize("s3://m/dev.tar.gz")


def test_truncated_and_missing_archives(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    whole = tarball({"model.joblib": bytes(range(256)) * 400})
    objects.put_bytes("s3://m/cut.tar.gz", whole[: len(whole) // 2])
    with pytest.raises(ArtifactError, match="Failed to extract model data archive s3://m/cut.tar.gz"):
        cache.materialize("s3://m/cut.tar.gz")
    with pytest.raises(ArtifactError, match="Failed to download model data from s3://m/none.tar.gz"):
        cache.materialize("s3://m/none.tar.gz")


def test_uncompressed_prefix_and_bucket_escape(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    objects.put_bytes("s3://m/plain/model.joblib", b"z")
    got = cache.materialize(
        None, {"S3DataSource": {"S3Uri": "s3://m/plain/", "S3DataType": "S3Prefix", "CompressionType": "None"}}
    )
    assert (got / "model.joblib").read_bytes() == b"z"
    with pytest.raises(BlobError, match="escapes its bucket"):
        objects.local_path("s3://m/../../etc/passwd")
