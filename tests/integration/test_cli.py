"""Command-line clients against a real server: the AWS CLI (v1) and modelhost's own CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROLE, SKLEARN_IMAGE, csv_row, diabetes, sklearn_model

BIN = Path(sys.executable).parent
AWS = str(BIN / "aws")
MODELHOST = str(BIN / "modelhost")
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")  # no user AWS config or credentials leak in
    # Not a terminal and no COLUMNS: what scripts see (rich then lays out for 80 columns).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELHOST_")) and k != "COLUMNS"}
    env.update(
        {
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        }
    )
    return env


@pytest.fixture(scope="module")
def model(server):  # type: ignore[no-untyped-def]
    data, fitted = sklearn_model()
    server.put_object("s3://models/cli/model.tar.gz", data)
    return fitted


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def aws(server, env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return run([AWS, "--endpoint-url", server.url, "--region", "us-east-1", "--output", "json", *args], env, cwd)


def aws_json(server, env: dict[str, str], *args: str) -> dict:  # type: ignore[no-untyped-def]
    proc = aws(server, env, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def mh(server, env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return run([MODELHOST, *args, "--url", server.url], env, cwd, timeout=120)


def expected_prediction(model, row: str) -> float:  # type: ignore[no-untyped-def]
    return float(model.predict([[float(v) for v in row.split(",")]])[0])


# --- AWS CLI ----------------------------------------------------------------------------------


def test_aws_cli_flow(server, cli_env, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = "cli-aws"
    out = aws_json(
        server,
        cli_env,
        "sagemaker",
        "create-model",
        "--model-name",
        name,
        "--execution-role-arn",
        ROLE,
        "--primary-container",
        f"Image={SKLEARN_IMAGE},ModelDataUrl=s3://models/cli/model.tar.gz",
    )
    assert out == {"ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{name}"}
    out = aws_json(
        server,
        cli_env,
        "sagemaker",
        "create-endpoint-config",
        "--endpoint-config-name",
        name,
        "--production-variants",
        f"VariantName=AllTraffic,ModelName={name},InitialInstanceCount=1,InstanceType=ml.m5.large",
    )
    assert out == {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{name}"}
    out = aws_json(
        server,
        cli_env,
        "sagemaker",
        "create-endpoint",
        "--endpoint-name",
        name,
        "--endpoint-config-name",
        name,
        "--tags",
        "Key=owner,Value=cli",
    )
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{name}"
    assert out == {"EndpointArn": arn}

    # `aws sagemaker wait endpoint-in-service` polls every 30 s; poll describe-endpoint instead.
    deadline = time.monotonic() + 60
    while True:
        desc = aws_json(server, cli_env, "sagemaker", "describe-endpoint", "--endpoint-name", name)
        if desc["EndpointStatus"] != "Creating":
            break
        assert time.monotonic() < deadline, desc
        time.sleep(0.5)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert desc["EndpointName"] == name and desc["EndpointArn"] == arn and desc["EndpointConfigName"] == name
    # AWS CLI v1 prints the wire value: epoch seconds with millisecond precision.
    assert isinstance(desc["CreationTime"], float) and abs(desc["CreationTime"] - time.time()) < 120
    assert round(desc["CreationTime"], 3) == desc["CreationTime"]
    (pv,) = desc["ProductionVariants"]
    assert pv["VariantName"] == "AllTraffic"
    assert pv["CurrentInstanceCount"] == 1 and pv["DesiredInstanceCount"] == 1
    assert pv["CurrentWeight"] == 1.0
    assert pv["DeployedImages"][0]["SpecifiedImage"] == SKLEARN_IMAGE

    x, _ = diabetes()
    row = csv_row(x[5])
    assert row.startswith("-")  # argparse would read a separate "-0.0..." as an option: use --body=ROW
    proc = aws(
        server,
        cli_env,
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        name,
        "--content-type",
        "text/csv",
        f"--body={row}",
        "out.json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["ContentType"] == "application/json"
    assert meta["InvokedProductionVariant"] == "AllTraffic"
    got = json.loads((tmp_path / "out.json").read_text())
    assert abs(got[0] - expected_prediction(model, row)) < 1e-9

    proc = aws(
        server,
        cli_env,
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        name,
        "--content-type",
        "text/csv",
        "--accept",
        "text/csv",
        f"--body={row}",
        "out.csv",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ContentType"] == "text/csv"
    assert abs(float((tmp_path / "out.csv").read_text().strip()) - expected_prediction(model, row)) < 1e-9

    listed = aws_json(server, cli_env, "sagemaker", "list-endpoints", "--name-contains", "cli-aws")
    assert [(e["EndpointName"], e["EndpointStatus"], e["EndpointArn"]) for e in listed["Endpoints"]] == [
        (name, "InService", arn)
    ]
    tags = aws_json(server, cli_env, "sagemaker", "list-tags", "--resource-arn", arn)
    assert tags["Tags"] == [{"Key": "owner", "Value": "cli"}]

    assert aws_json(server, cli_env, "sagemaker", "delete-endpoint", "--endpoint-name", name) == {}
    deadline = time.monotonic() + 60
    while True:
        proc = aws(server, cli_env, "sagemaker", "describe-endpoint", "--endpoint-name", name)
        if proc.returncode != 0:
            break
        assert json.loads(proc.stdout)["EndpointStatus"] == "Deleting"
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "ValidationException" in proc.stderr and "Could not find endpoint" in proc.stderr
    # Already gone: the waiter succeeds on its first ValidationException.
    started = time.monotonic()
    proc = aws(server, cli_env, "sagemaker", "wait", "endpoint-deleted", "--endpoint-name", name)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15
    aws_json(server, cli_env, "sagemaker", "delete-endpoint-config", "--endpoint-config-name", name)
    aws_json(server, cli_env, "sagemaker", "delete-model", "--model-name", name)
    listed = aws_json(server, cli_env, "sagemaker", "list-models", "--name-contains", "cli-aws")
    assert listed["Models"] == []


def test_aws_cli_errors(server, cli_env) -> None:  # type: ignore[no-untyped-def]
    proc = aws(server, cli_env, "sagemaker", "describe-endpoint", "--endpoint-name", "nope")
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr
    assert f'Could not find endpoint "arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/nope"' in proc.stderr

    proc = aws(
        server,
        cli_env,
        "sagemaker",
        "create-model",
        "--model-name",
        "bad_name!",
        "--execution-role-arn",
        ROLE,
        "--primary-container",
        f"Image={SKLEARN_IMAGE}",
    )
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr and "1 validation error detected" in proc.stderr

    proc = aws(
        server,
        cli_env,
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        "nope",
        "--content-type",
        "text/csv",
        "--body",
        "1,2",
        "/dev/null",
    )
    assert proc.returncode != 0
    assert "ValidationError" in proc.stderr
    assert f"Endpoint nope of account {ACCOUNT} not found." in proc.stderr


# --- modelhost CLI ----------------------------------------------------------------------------


def test_modelhost_cli_flow(server, cli_env, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import joblib

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    buf = io.BytesIO()
    joblib.dump(model, buf)
    (model_dir / "model.joblib").write_bytes(buf.getvalue())

    name = "cli-mh"
    proc = mh(server, cli_env, "deploy", str(model_dir), "--name", name, "--instances", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"endpoint {name}: InService" in proc.stdout

    x, _ = diabetes()
    row = csv_row(x[7])
    proc = mh(server, cli_env, "invoke", name, "--content-type", "text/csv", "--body", row)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert abs(got[0] - expected_prediction(model, row)) < 1e-9

    proc = mh(server, cli_env, "invoke", name, "--content-type", "text/csv", "--accept", "text/csv", "--body", row)
    assert proc.returncode == 0, proc.stderr
    assert abs(float(proc.stdout.strip()) - expected_prediction(model, row)) < 1e-9

    body_file = tmp_path / "rows.csv"
    body_file.write_text(f"{row}\n{csv_row(x[8])}\n")
    proc = mh(server, cli_env, "invoke", name, "--content-type", "text/csv", "--file", str(body_file))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 2

    proc = mh(server, cli_env, "ls")
    assert proc.returncode == 0, proc.stderr
    endpoint_lines = [line for line in proc.stdout.splitlines() if name in line and "InService" in line]
    assert len(endpoint_lines) == 1, proc.stdout
    assert "Models" in proc.stdout and "Endpoint configs" in proc.stdout and "Endpoints" in proc.stdout

    proc = mh(server, cli_env, "logs", name)
    assert proc.returncode == 0, proc.stderr
    assert "modelhost worker pid" in proc.stdout
    assert "endpoint is InService" in proc.stdout

    proc = mh(server, cli_env, "delete", name)
    assert proc.returncode == 0, proc.stderr
    assert f"endpoint {name}: Deleting" in proc.stdout
    sm, _ = server.clients()
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    # `delete` also removed the config and model `deploy` created under the same name.
    assert sm.list_models(NameContains=name)["Models"] == []
    assert sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"] == []


def test_modelhost_cli_errors(server, cli_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = mh(server, cli_env, "invoke", "nope", "--content-type", "text/csv", "--body", "1,2")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "ValidationError" in lines[0] and f"Endpoint nope of account {ACCOUNT} not found." in lines[0]
    assert proc.stdout == ""

    proc = mh(server, cli_env, "deploy", "/no/such/path", "--name", "cli-missing")
    assert proc.returncode == 1
    assert "/no/such/path does not exist" in proc.stderr
    sm, _ = server.clients()
    assert sm.list_models(NameContains="cli-missing")["Models"] == []

    # A message longer than 80 columns still comes out as one line.
    long_name = "nope-" + "x" * 58
    proc = mh(server, cli_env, "delete", long_name)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f'error: ValidationException: Could not find endpoint "arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/'
        f'{long_name}".'
    )

    proc = mh(server, cli_env, "logs", "nope")
    assert proc.returncode == 1
    assert "No logs for endpoint nope" in proc.stderr

    proc = mh(server, cli_env, "invoke", "nope", "--content-type", "text/csv")
    assert proc.returncode == 1
    assert "exactly one of --body or --file" in proc.stderr
