"""Batch transform data capture: manifest documents, keys and atomic writes (batch/capture.py)."""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest

from modelhost.jobs.capture import (
    CapturedObject,
    CaptureError,
    capture_name,
    capture_uris,
    manifests,
    write_capture,
)
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore

WHEN = calendar.timegm((2024, 3, 5, 7, 59, 58)) + 0.25


def obj(inp: str, out: str, output_path: str) -> CapturedObject:
    return CapturedObject.of(inp, out, output_path)


def test_manifests_use_the_jobs_prefixes_and_key_order() -> None:
    done = [
        obj("s3://b/in/sub/z.csv", "s3://b/out/sub/z.csv.out", "s3://b/out/"),
        obj("s3://b/in/a.csv", "s3://b/out/a.csv.out", "s3://b/out"),
    ]
    inputs, outputs = manifests(done)
    assert json.loads(inputs) == [{"prefix": "s3://b/in/"}, "a.csv", "sub/z.csv"]
    assert json.loads(outputs) == [{"prefix": "s3://b/out/"}, "a.csv.out", "sub/z.csv.out"]


def test_one_nested_object_keeps_the_input_prefix() -> None:
    inputs, outputs = manifests([obj("s3://b/in/x/y.csv", "s3://b/o/x/y.csv.out", "s3://b/o")])
    assert json.loads(inputs) == [{"prefix": "s3://b/in/"}, "x/y.csv"]
    assert json.loads(outputs) == [{"prefix": "s3://b/o/"}, "x/y.csv.out"]


def test_unknown_relative_path_falls_back_to_the_common_prefix() -> None:
    c = obj("s3://b/in/x/y.csv", "s3://elsewhere/y.csv.out", "s3://b/o")
    assert c.rel == ""
    inputs, outputs = manifests([c])
    assert json.loads(inputs) == [{"prefix": "s3://b/in/x/"}, "y.csv"]
    assert json.loads(outputs) == [{"prefix": "s3://elsewhere/"}, "y.csv.out"]


def test_keys_hour_and_stable_name() -> None:
    name = capture_name("arn:aws:sagemaker:us-east-1:123456789012:transform-job/j", WHEN)
    assert name == capture_name("arn:aws:sagemaker:us-east-1:123456789012:transform-job/j", WHEN)
    assert name != capture_name("arn:aws:sagemaker:us-east-1:123456789012:transform-job/j", WHEN + 1)
    assert len(name) == 36
    assert capture_uris("s3://c/cap/", WHEN, name) == (
        f"s3://c/cap/input/2024/03/05/07/{name}.json",
        f"s3://c/cap/output/2024/03/05/07/{name}.json",
    )


def _bucket_store(tmp_path: Path) -> tuple[LocalBlobStore, BucketStore]:
    buckets = BucketStore(tmp_path / "buckets", tmp_path)
    buckets.create_bucket("cap")
    return LocalBlobStore(buckets), buckets


def test_write_capture_into_the_bucket_store(tmp_path: Path) -> None:
    objects, buckets = _bucket_store(tmp_path)
    done = [obj("s3://b/in/a.csv", "s3://b/out/a.csv.out", "s3://b/out")]
    written = write_capture(objects, "s3://cap/dc", done, WHEN, "n")
    assert written == ["s3://cap/dc/input/2024/03/05/07/n.json", "s3://cap/dc/output/2024/03/05/07/n.json"]
    keys = ["dc/input/2024/03/05/07/n.json", "dc/output/2024/03/05/07/n.json"]
    assert [k for k, _ in buckets.iter_keys("cap", "dc/")] == keys
    reader = objects.open("s3://cap/dc/input/2024/03/05/07/n.json")
    assert json.loads(reader.read(-1)) == [{"prefix": "s3://b/in/"}, "a.csv"]
    meta = buckets.head_object("cap", "dc/output/2024/03/05/07/n.json")
    assert meta.attrs.content_type == "application/json"
    assert list(buckets.tmp_dir.iterdir()) == []
    # rewriting (a resumed job) replaces the same keys
    assert write_capture(objects, "s3://cap/dc", done, WHEN, "n") == written
    assert [k for k, _ in buckets.iter_keys("cap", "dc/")] == keys


def test_nothing_completed_writes_nothing(tmp_path: Path) -> None:
    objects, buckets = _bucket_store(tmp_path)
    assert write_capture(objects, "s3://cap/dc", [], WHEN, "n") == []
    assert not (tmp_path / "buckets" / "cap" / "dc").exists() and not list(buckets.iter_keys("cap"))


def test_missing_bucket_is_a_capture_error_and_leaves_no_temp_file(tmp_path: Path) -> None:
    objects, buckets = _bucket_store(tmp_path)
    done = [obj("s3://b/in/a.csv", "s3://b/out/a.csv.out", "s3://b/out")]
    with pytest.raises(CaptureError, match=r"DataCaptureConfig\.DestinationS3Uri s3://nope/dc: "):
        write_capture(objects, "s3://nope/dc", done, WHEN, "n")
    assert list(buckets.tmp_dir.iterdir()) == []


def test_local_destination(tmp_path: Path) -> None:
    objects = LocalBlobStore(BucketStore(tmp_path / "buckets", tmp_path))
    dest = str(tmp_path / "capture")
    done = [obj(str(tmp_path / "in" / "a.csv"), dest + "-out/a.csv.out", dest + "-out")]
    write_capture(objects, dest, done, WHEN, "n")
    doc = json.loads((tmp_path / "capture" / "output/2024/03/05/07/n.json").read_bytes())
    assert doc == [{"prefix": dest + "-out/"}, "a.csv.out"]
    assert [p.name for p in (tmp_path / "capture" / "input/2024/03/05/07").iterdir()] == ["n.json"]
