"""Permission matching (security/permissions.py) and the audit log (security/audit.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from modelhost.security import AccessDenied, AuditLog, Policy, authorize, is_mutating
from modelhost.security.credentials import Key

EP = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/"


def test_wildcards_in_actions_and_resources() -> None:
    p = Policy.parse(
        "sagemaker:Describe*, s3:GetObject=arn:aws:s3:::models/*, sagemaker:InvokeEndpoint=" + EP + "prod-?"
    )
    assert p.allows("sagemaker:DescribeEndpoint", EP + "x")
    assert p.allows("SageMaker:describeendpoint", EP + "x")  # actions: case-insensitive
    assert not p.allows("sagemaker:CreateModel", "*")
    assert p.allows("s3:GetObject", "arn:aws:s3:::models/a/b.tar.gz")
    assert not p.allows("s3:GetObject", "arn:aws:s3:::other/a")
    assert not p.allows("s3:PutObject", "arn:aws:s3:::models/a")
    assert p.allows("sagemaker:InvokeEndpoint", EP + "prod-a")
    assert not p.allows("sagemaker:InvokeEndpoint", EP + "prod-ab")
    assert not p.allows("sagemaker:InvokeEndpoint", EP.upper() + "PROD-A")  # resources: case-sensitive
    assert Policy.parse(None).allows("anything:AtAll", "arn:x")
    assert Policy.parse("*").allows("s3:DeleteBucket", "arn:aws:s3:::b")
    assert Policy.parse("s3:*").allows("s3:DeleteBucket", "arn:aws:s3:::b")
    assert not Policy.parse("s3:*").allows("sagemaker:ListModels", "*")


def test_denial_text() -> None:
    key = Key("app", "AKIDAPP", "s", "123456789012", policy=Policy.parse("sagemaker:InvokeEndpoint"))
    authorize(key, "sagemaker:InvokeEndpoint", EP + "x")
    with pytest.raises(AccessDenied) as info:
        authorize(key, "sagemaker:CreateModel", "arn:aws:sagemaker:us-east-1:123456789012:model/m")
    err = info.value
    assert err.code == "AccessDeniedException" and err.status == 400
    assert err.message == (
        "User: arn:aws:iam::123456789012:user/app is not authorized to perform: sagemaker:CreateModel on resource: "
        "arn:aws:sagemaker:us-east-1:123456789012:model/m because no identity-based policy allows the "
        "sagemaker:CreateModel action"
    )
    assert 'on resource: "arn:aws:sagemaker' in err.s3_message


def test_mutating_actions() -> None:
    for action in (
        "sagemaker:CreateModel",
        "sagemaker:UpdateEndpoint",
        "s3:PutObject",
        "s3:DeleteObject",
        "application-autoscaling:RegisterScalableTarget",
        "sagemaker:StopTransformJob",
        "sagemaker:AddTags",
        "s3:AbortMultipartUpload",
    ):
        assert is_mutating(action), action
    for action in ("sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint", "s3:GetObject", "s3:ListBucket"):
        assert not is_mutating(action), action


def test_audit_log_rotates_and_is_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "logs" / "audit.jsonl", max_bytes=400, backups=2)
    for i in range(10):
        log.record(key="admin", access_key="AK", action="s3:PutObject", resource=f"arn:aws:s3:::b/{i}", status=200)
    log.record(key="admin", access_key="AK", action="sagemaker:CreateModel", resource="arn:m", status=400)
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        assert stat.S_IMODE(os.stat(tmp_path / "logs" / name).st_mode) == 0o600
    last = json.loads((tmp_path / "logs" / "audit.jsonl").read_text().splitlines()[-1])
    assert last["action"] == "sagemaker:CreateModel" and last["result"] == "failure" and last["key"] == "admin"
    assert set(last) >= {"time", "key", "action", "resource", "result"}
