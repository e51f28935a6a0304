"""Isolation rules without a server: extraction caps (size, ratio), local model locations, the
instance quota's default, and webhook targets."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelhost.control.endpoints import default_max_instances
from modelhost.hosting.asyncq.notify import Notifier
from modelhost.resources.webhooks import blocked_address, webhook_allowed, webhook_refusal
from modelhost.store.artifacts import (
    GIB,
    ArtifactCache,
    ArtifactError,
    location_refusal,
    max_artifact_bytes,
    submit_dir_refusal,
)
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore

MIB = 1024 * 1024


def zeros_tarball(size: int, name: str = "zeros.bin") -> bytes:
    """A tar.gz of one file of ``size`` zero bytes (streamed: never ``size`` bytes in memory)."""

    class Zeros(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(), 1024 * 1024))
    return out.getvalue()


def _cache(tmp_path: Path, **kw: Any) -> tuple[ArtifactCache, LocalBlobStore]:
    buckets = BucketStore(tmp_path / "buckets", tmp_path)
    (tmp_path / "buckets" / "models").mkdir()
    objects = LocalBlobStore(buckets)
    return ArtifactCache(objects, tmp_path / "cache", **kw), objects


def _cache_entries(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []


# --- extraction caps


def test_size_cap_refuses_before_writing_and_leaves_nothing(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    bomb = zeros_tarball(200 * MIB)  # ~200 KB compressed
    assert len(bomb) < 2 * MIB
    objects.put_bytes("s3://models/bomb.tar.gz", bomb)
    with pytest.raises(ArtifactError) as info:
        cache.materialize("s3://models/bomb.tar.gz", max_bytes=64 * MIB)
    assert str(info.value) == (
        f"Refused to extract model data s3://models/bomb.tar.gz: it expands to more than {64 * MIB} bytes, the "
        "limit for extracted model data (MODELHOST_MAX_ARTIFACT_BYTES; default 10 x the variant's VolumeSizeInGB, "
        "else 30 GiB)."
    )
    assert _cache_entries(tmp_path) == []  # no partial extraction


def test_ratio_cap(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    bomb = zeros_tarball(200 * MIB)
    objects.put_bytes("s3://models/bomb.tar.gz", bomb)
    with pytest.raises(ArtifactError) as info:
        cache.materialize("s3://models/bomb.tar.gz")  # the default size cap (30 GiB) is far away
    assert str(info.value) == (
        "Refused to extract model data s3://models/bomb.tar.gz: it expands to more than 200 times its compressed "
        f"size of {len(bomb)} bytes (a decompression bomb?)."
    )
    assert _cache_entries(tmp_path) == []


def test_small_and_incompressible_archives_pass(tmp_path: Path) -> None:
    cache, objects = _cache(tmp_path)
    objects.put_bytes("s3://models/small.tar.gz", zeros_tarball(512 * 1024))  # ratio applies above 1 MiB only
    assert (cache.materialize("s3://models/small.tar.gz") / "zeros.bin").stat().st_size == 512 * 1024
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = os.urandom(3 * MIB)
        info = tarfile.TarInfo("weights.bin")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    objects.put_bytes("s3://models/random.tar.gz", out.getvalue())
    target = cache.materialize("s3://models/random.tar.gz", max_bytes=4 * MIB)
    assert (target / "weights.bin").read_bytes() == data
    assert (target / "weights.bin").stat().st_mode & 0o777 == 0o600  # private whatever the archive said


def test_max_artifact_bytes_defaults() -> None:
    assert max_artifact_bytes(0, None) == 30 * GIB
    assert max_artifact_bytes(0, 4) == 40 * GIB
    assert max_artifact_bytes(123, 4) == 123


# --- local model locations

ALLOWED_RULE = "is outside the directories modelhost may read models from (MODELHOST_ALLOWED_MODEL_DIRS)."


def test_location_rules(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "m").mkdir(parents=True)
    (allowed / "out").symlink_to("/etc")
    roots = (allowed,)
    assert location_refusal("ModelDataUrl", "s3://b/k.tar.gz", roots) is None
    assert location_refusal("ModelDataUrl", f"file://{allowed}/m/model.tar.gz", roots) is None
    assert location_refusal("ModelDataUrl", f"{allowed}/m", roots) is None
    assert location_refusal("ModelDataUrl", "file:///etc/", roots) == f"ModelDataUrl file:///etc/ {ALLOWED_RULE}"
    assert location_refusal("ModelDataUrl", "/root", roots) == f"ModelDataUrl /root {ALLOWED_RULE}"
    for uri in (f"file://{allowed}/../etc", f"file://{allowed}/out/passwd", f"{allowed}/out", "file://localhost/etc"):
        assert location_refusal("X", uri, roots) == f"X {uri} {ALLOWED_RULE}", uri
    assert submit_dir_refusal("/opt/ml/model/code", roots) is None
    assert submit_dir_refusal("s3://b/sourcedir.tar.gz", roots) is None
    assert submit_dir_refusal("/opt/ml/model/../../etc", roots) == (
        f"Environment.SAGEMAKER_SUBMIT_DIRECTORY /opt/ml/model/../../etc {ALLOWED_RULE}"
    )
    assert (
        submit_dir_refusal("file:///etc", roots) == f"Environment.SAGEMAKER_SUBMIT_DIRECTORY file:///etc {ALLOWED_RULE}"
    )


def test_materialize_checks_the_location_again(tmp_path: Path) -> None:
    cache, _ = _cache(tmp_path, allowed_dirs=(tmp_path / "allowed",))
    with pytest.raises(ArtifactError) as info:
        cache.materialize("file:///etc/")
    assert str(info.value) == f"ModelDataUrl file:///etc/ {ALLOWED_RULE}"
    with pytest.raises(ArtifactError) as info:
        cache.materialize(None, {"S3DataSource": {"S3Uri": "file:///etc/", "CompressionType": "None"}})
    assert str(info.value) == f"ModelDataSource.S3DataSource.S3Uri file:///etc/ {ALLOWED_RULE}"


# --- the instance quota's default


def test_default_max_instances() -> None:
    assert default_max_instances(cpus=1, memory=64 * GIB) == 4
    assert default_max_instances(cpus=16, memory=64 * GIB) == 32
    assert default_max_instances(cpus=16, memory=4 * GIB) == 8  # one per 512 MiB
    assert default_max_instances(cpus=2, memory=256 * MIB) == 1
    assert default_max_instances() >= 1


# --- webhooks


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
    ],
)
def test_blocked_addresses(address: str, blocked: bool) -> None:
    assert blocked_address(address) is blocked


def test_webhook_allow_list_and_refusal() -> None:
    assert webhook_allowed("http://127.0.0.1:9000/hook", "127.0.0.1")
    assert webhook_allowed("http://127.0.0.1:9000/hook", "example.org, 127.0.0.1:9000")
    assert not webhook_allowed("http://127.0.0.1:9001/hook", "127.0.0.1:9000")
    assert webhook_allowed("http://10.0.0.5/hooks/a", "http://10.0.0.5/hooks/")
    assert not webhook_allowed("http://10.0.0.5/admin", "http://10.0.0.5/hooks/")
    assert webhook_allowed("http://[::1]:80/x", "[::1]")

    def resolver(host: str) -> list[str]:
        table = {"internal.example": ["93.184.216.34", "10.0.0.1"], "public.example": ["93.184.216.34"]}
        if host in table:
            return table[host]
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        raise OSError("no such host")

    assert webhook_refusal("https://public.example/x", "", resolver) is None
    assert webhook_refusal("https://nowhere.example/x", "", resolver) is None  # checked again when sending
    assert webhook_refusal("http://127.0.0.1:8080/internal-admin", "", resolver) == (
        "its host 127.0.0.1 is a loopback, link-local, private or unspecified address; list it in "
        "MODELHOST_WEBHOOK_ALLOW to allow it"
    )
    assert webhook_refusal("http://internal.example/x", "", resolver) == (
        "its host internal.example (10.0.0.1) is a loopback, link-local, private or unspecified address; list it "
        "in MODELHOST_WEBHOOK_ALLOW to allow it"
    )
    assert webhook_refusal("http://internal.example/x", "internal.example", resolver) is None


def test_notifier_checks_the_connected_address() -> None:
    """At send time the address actually connected to is checked (DNS may have changed since)."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    import asyncio

    try:
        refused = Notifier(None, "us-east-1", delays=(0.01,) * 3)
        assert asyncio.run(refused.send(url, '{"a": 1}')) is False
        assert received == []  # nothing was sent
        allowed = Notifier(None, "us-east-1", delays=(0.01,), webhook_allow="127.0.0.1")
        assert asyncio.run(allowed.send(url, '{"a": 1}')) is True
        assert received == [b'{"a": 1}']
    finally:
        httpd.shutdown()
        httpd.server_close()
