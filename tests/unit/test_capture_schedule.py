"""Real-time data capture (hosting/capture/: sampling, record format, object keys, bounded buffer,
flush) and monitoring schedule expressions and slots (resources/schedule.py)."""

from __future__ import annotations

import asyncio
import base64
import calendar
import json
from pathlib import Path

import pytest

from modelhost.hosting.capture import CaptureConfig, DataCapture
from modelhost.resources import schedule as sch
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.buckets import BucketStore

CONFIG = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://cap/data/",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
}


def store(tmp_path: Path) -> tuple[BucketStore, LocalBlobStore]:
    buckets = BucketStore(tmp_path / "buckets", tmp_path)
    buckets.create_bucket("cap")
    return buckets, LocalBlobStore(buckets)


def lines(blobs: LocalBlobStore) -> list[tuple[str, dict]]:
    out = []
    for info in blobs.list("s3://cap/data/"):
        reader = blobs.open(info.uri)
        text = reader.read(1 << 20).decode()
        reader.close()
        out += [(info.uri, json.loads(line)) for line in text.splitlines()]
    return out


def test_encodings_follow_the_content_type_header() -> None:
    config = CaptureConfig.parse(CONFIG)
    assert config.active and config.capture_input and config.capture_output
    assert config.encoding("text/csv; charset=utf-8") == "CSV"
    assert config.encoding("application/json") == "JSON"
    assert config.encoding("application/x-npy") == "BASE64"
    assert CaptureConfig.parse({**CONFIG, "CaptureContentTypeHeader": {}}).encoding("text/csv") == "BASE64"
    assert not CaptureConfig.parse({**CONFIG, "EnableCapture": False}).active
    assert not CaptureConfig.parse({**CONFIG, "InitialSamplingPercentage": 0}).active


def test_records_and_keys(tmp_path: Path) -> None:
    _buckets, blobs = store(tmp_path)
    capture = DataCapture(blobs)
    capture.configs = {"ep": CaptureConfig.parse(CONFIG)}
    headers = [(b"content-type", b"text/csv"), (b"x-amzn-sagemaker-inference-id", b"id-1")]
    capture.offer("ep", "v1", b"1,2,3", headers, b"0.5", "text/csv; charset=utf-8")
    capture.offer("ep", "v1", b"\x00\x01", [(b"content-type", b"application/x-npy")], b'{"a": 1}', "application/json")
    capture.offer("other", "v1", b"x", [], b"y", "text/csv")  # not captured
    asyncio.run(capture.flush())
    found = lines(blobs)
    assert len(found) == 2
    uri, first = found[0]
    parts = uri.removeprefix("s3://cap/data/").split("/")
    assert parts[:2] == ["ep", "v1"] and len(parts) == 7 and parts[-1].endswith(".jsonl")
    assert parts[-1][:2].isdigit() and parts[-1][2] == "-"  # MM-SS-mmm-<uuid>.jsonl
    assert first["captureData"] == {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT", "data": "1,2,3", "encoding": "CSV"},
        "endpointOutput": {
            "observedContentType": "text/csv; charset=utf-8",
            "mode": "OUTPUT",
            "data": "0.5",
            "encoding": "CSV",
        },
    }
    assert first["eventMetadata"]["inferenceId"] == "id-1" and first["eventVersion"] == "0"
    second = found[1][1]
    assert second["captureData"]["endpointInput"]["data"] == base64.b64encode(b"\x00\x01").decode()
    assert second["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert second["captureData"]["endpointOutput"]["encoding"] == "JSON"
    assert "inferenceId" not in second["eventMetadata"]


def test_only_configured_directions_and_sampling(tmp_path: Path) -> None:
    _buckets, blobs = store(tmp_path)
    capture = DataCapture(blobs)
    capture.configs = {
        "ep": CaptureConfig.parse(
            {**CONFIG, "CaptureOptions": [{"CaptureMode": "Output"}], "InitialSamplingPercentage": 30}
        )
    }
    for _ in range(2000):
        capture.offer("ep", "v", b"1", [], b"2", "text/csv")
    asyncio.run(capture.flush())
    found = lines(blobs)
    assert 450 < len(found) < 750  # 30 % of 2000, drawn per request
    assert all(list(r["captureData"]) == ["endpointOutput"] for _u, r in found)


def test_the_buffer_is_bounded(tmp_path: Path) -> None:
    _buckets, blobs = store(tmp_path)
    capture = DataCapture(blobs, buffer_bytes=10_000)
    capture.configs = {"ep": CaptureConfig.parse(CONFIG)}
    for _ in range(100):
        capture.offer("ep", "v", b"x" * 500, [], b"y", "text/csv")
    asyncio.run(capture.flush())
    assert 0 < len(lines(blobs)) <= 10_000 // 500


def test_a_missing_bucket_is_counted_not_raised(tmp_path: Path) -> None:
    _buckets, blobs = store(tmp_path)
    capture = DataCapture(blobs)
    capture.configs = {"ep": CaptureConfig.parse({**CONFIG, "DestinationS3Uri": "s3://nope/x"})}
    capture.offer("ep", "v", b"1", [], b"2", "text/csv")
    asyncio.run(capture.flush())  # logged and counted


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, 0)))


def test_cron_forms_and_errors() -> None:
    assert sch.parse("cron(0 * ? * * *)").cron == "0 * * * *"
    assert sch.parse("cron(0 5 ? * * *)").cron == "0 5 * * *"
    assert sch.parse("cron(0 2/6 ? * * *)").cron == "0 2/6 * * *"
    for bad, words in (
        ("cron(*/5 * ? * * *)", "minute must be 0"),
        ("cron(0 * * *)", "Invalid ScheduleExpression"),
        ("rate(1 hour)", "Invalid ScheduleExpression"),
        ("cron(0 25 ? * * *)", "hour out of range"),
        ("cron(0 * ? * MON *)", "only hourly, daily"),
    ):
        with pytest.raises(sch.ScheduleError, match=words):
            sch.parse(bad)
    with pytest.raises(sch.ScheduleError, match="required for a one-time"):
        sch.parse("NOW")
    with pytest.raises(sch.ScheduleError, match="negative ISO-8601"):
        sch.parse("NOW", "PT1H", "-PT0H")
    with pytest.raises(sch.ScheduleError, match="earlier than"):
        sch.parse("NOW", "-PT1H", "-PT2H")
    with pytest.raises(sch.ScheduleError, match="at most 24 hours"):
        sch.parse("NOW", "-PT25H", "-PT0H")


def test_now_runs_once_over_its_window() -> None:
    now = sch.parse("NOW", "-PT1H", "-PT0H")
    created = at(2026, 12, 1, 10, 20)
    assert now.due(created, created + 1, None) == created
    assert now.due(created, created + 100, created) is None
    assert now.window(created) == (created - 3600, created)


def test_a_missed_slot_runs_once_after_a_restart() -> None:
    hourly = sch.parse("cron(0 * ? * * *)")
    created = at(2026, 12, 1, 10, 30)
    assert hourly.due(created, at(2026, 12, 1, 10, 59), None) is None  # no slot since creation yet
    assert hourly.due(created, at(2026, 12, 1, 11), None) == at(2026, 12, 1, 11)
    # down from 11:30 to 14:05: only the latest slot (14:00) runs, once
    assert hourly.due(created, at(2026, 12, 1, 14, 5), at(2026, 12, 1, 11)) == at(2026, 12, 1, 14)
    assert hourly.due(created, at(2026, 12, 1, 14, 6), at(2026, 12, 1, 14)) is None
    assert hourly.window(at(2026, 12, 1, 14)) == (at(2026, 12, 1, 13), at(2026, 12, 1, 14))
    daily = sch.parse("cron(0 5 ? * * *)")
    assert daily.due(created, at(2026, 12, 3, 4), None) == at(2026, 12, 2, 5)
    assert sch.hours(at(2026, 12, 1, 9, 30), at(2026, 12, 1, 11)) == [at(2026, 12, 1, 9), at(2026, 12, 1, 10)]


def test_the_scheduler_runs_each_slot_once_across_restarts(tmp_path: Path) -> None:
    from typing import Any, cast

    from modelhost.control.context import ControlContext
    from modelhost.control.executions import list_monitoring_executions
    from modelhost.control.schedules import create_monitoring_schedule
    from modelhost.control.schedules import get as get_schedule
    from modelhost.controllers.monitoring import MonitoringScheduler
    from tests.unit.fakes import make_settings, make_store

    ctx = ControlContext(make_settings(tmp_path), make_store(tmp_path), blobs=cast(Any, None))
    definition = {
        "MonitoringInputs": [{"EndpointInput": {"EndpointName": "gone", "LocalPath": "/opt/ml/processing/input/e"}}],
        "MonitoringOutputConfig": {
            "MonitoringOutputs": [{"S3Output": {"S3Uri": "s3://b/r", "LocalPath": "/opt/ml/processing/o"}}]
        },
        "MonitoringResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
        },
        "MonitoringAppSpecification": {"ImageUri": "sagemaker-model-monitor-analyzer"},
        "RoleArn": "arn:aws:iam::123456789012:role/r",
    }
    create_monitoring_schedule(
        ctx,
        {
            "MonitoringScheduleName": "hourly",
            "MonitoringScheduleConfig": {
                "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
                "MonitoringJobDefinition": definition,
            },
        },
    )
    start = float(get_schedule(ctx, "hourly")["creation_time"])
    later = start - start % 3600 + 3 * 3600 + 60  # three slots later, e.g. after a long outage
    # a fresh scheduler each time: what a restarted server has
    assert MonitoringScheduler(ctx).run_due(later) == 1
    assert MonitoringScheduler(ctx).run_due(later + 5) == 0
    assert MonitoringScheduler(ctx).run_due(later + 3600) == 1
    listed = list_monitoring_executions(ctx, {"SortBy": "ScheduledTime", "SortOrder": "Ascending"})
    summaries = listed["MonitoringExecutionSummaries"]
    assert [s["ScheduledTime"] for s in summaries] == [later - 60, later - 60 + 3600]
    # the endpoint is gone: each execution failed with the reason, and ran no job
    assert all(
        s["MonitoringExecutionStatus"] == "Failed" and "gone does not exist" in s["FailureReason"] for s in summaries
    )
