"""The seeds' code unmodified: every client runs in its own process whose only change is the
environment ``modelhost env`` prints (no ``import modelhost``, no ``endpoint_url``): the sagemaker SDK
snippets (tests/seed_snippets.py), boto3, and the AWS CLI.

All scripts start at once and run side by side (each SDK ``deploy()`` sleeps 30 s before its first
DescribeEndpoint; running them together pays that once); each test checks one script's result.
Deploy wall times are printed (``-s``), never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import seed_snippets
from tests.helpers import SKLEARN_IMAGE, Server, sklearn_model

SCRIPT_TIMEOUT = 480
# All scripts run inside one fixture: its setup gets the scripts' budget plus the artifacts' build.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(SCRIPT_TIMEOUT + 240)]
HAS_TF = importlib.util.find_spec("tensorflow") is not None

BOTO3_SCRIPT = f"""
import json, time
import boto3, botocore

sm, rt, s3 = boto3.client("sagemaker"), boto3.client("sagemaker-runtime"), boto3.client("s3")
ident = boto3.client("sts").get_caller_identity()
iam = boto3.client("iam")
role = iam.get_role(RoleName=ident["Arn"].split("/")[1])["Role"]["Arn"]
try:
    iam.list_users()
    iam_error = None
except botocore.exceptions.ClientError as e:
    iam_error = e.response["Error"]["Code"]
s3.create_bucket(Bucket="boto3-plain")
s3.upload_file("sk-plain.tar.gz", "boto3-plain", "model/model.tar.gz")
sm.create_model(ModelName="boto3-plain", ExecutionRoleArn=role,
                PrimaryContainer={{"Image": "{SKLEARN_IMAGE}", "ModelDataUrl": "s3://boto3-plain/model/model.tar.gz"}})
variant = {{"VariantName": "AllTraffic", "ModelName": "boto3-plain", "InitialInstanceCount": 1,
           "InstanceType": "ml.m5.large"}}
sm.create_endpoint_config(EndpointConfigName="boto3-plain", ProductionVariants=[variant])
started = time.time()
sm.create_endpoint(EndpointName="boto3-plain", EndpointConfigName="boto3-plain")
sm.get_waiter("endpoint_in_service").wait(EndpointName="boto3-plain")  # botocore's default: 30 s between checks
returned = time.time()
desc = sm.describe_endpoint(EndpointName="boto3-plain")
body = rt.invoke_endpoint(EndpointName="boto3-plain", ContentType="text/csv", Body=open("row.csv").read())["Body"]
sm.delete_endpoint(EndpointName="boto3-plain")
sm.get_waiter("endpoint_deleted").wait(EndpointName="boto3-plain")
deleted = time.time()
print("RESULT " + json.dumps(dict(
    arn=ident["Arn"], role=role, iam_error=iam_error, status=desc["EndpointStatus"],
    prediction=body.read().decode(), wait_s=returned - started,
    late_s=returned - desc["LastModifiedTime"].timestamp(), delete_wait_s=deleted - returned)))
"""

CLI_SCRIPT = f"""
set -e
aws s3 mb s3://cli-plain >/dev/null
aws s3 cp sk-plain.tar.gz s3://cli-plain/model.tar.gz >/dev/null
ARN=$(aws sts get-caller-identity --query Arn --output text)
ROLE=$(aws iam get-role --role-name "$(echo "$ARN" | cut -d/ -f2)" --query Role.Arn --output text)
aws sagemaker create-model --model-name cli-plain --execution-role-arn "$ROLE" \\
  --primary-container Image={SKLEARN_IMAGE},ModelDataUrl=s3://cli-plain/model.tar.gz >/dev/null
aws sagemaker create-endpoint-config --endpoint-config-name cli-plain \\
  --production-variants VariantName=AllTraffic,ModelName=cli-plain,InitialInstanceCount=1,InstanceType=ml.m5.large \\
  >/dev/null
START=$(date +%s.%N)
aws sagemaker create-endpoint --endpoint-name cli-plain --endpoint-config-name cli-plain >/dev/null
aws sagemaker wait endpoint-in-service --endpoint-name cli-plain
END=$(date +%s.%N)
STATUS=$(aws sagemaker describe-endpoint --endpoint-name cli-plain --query EndpointStatus --output text)
aws sagemaker-runtime invoke-endpoint --endpoint-name cli-plain --content-type text/csv \\
  --body fileb://row.csv out-cli.json >/dev/null
set +e
IAM_ERR=$(aws iam list-users 2>&1 >/dev/null)
set -e
aws sagemaker delete-endpoint --endpoint-name cli-plain
python -c 'import json,sys; print("RESULT " + json.dumps(dict(arn=sys.argv[1], role=sys.argv[2], status=sys.argv[3],
  prediction=open("out-cli.json").read(), wait_s=float(sys.argv[5]) - float(sys.argv[4]), iam_error=sys.argv[6])))' \\
  "$ARN" "$ROLE" "$STATUS" "$START" "$END" "$IAM_ERR"
"""


@dataclass(frozen=True)
class Outcome:
    rc: int
    result: dict[str, Any] | None
    output: str

    def check(self) -> dict[str, Any]:
        assert self.rc == 0 and self.result is not None, self.output[-6000:]
        return self.result


def client_environment(url: str) -> dict[str, str]:
    """os.environ without any AWS/SDK setting of this machine, plus what ``modelhost env --dotenv`` prints."""
    printed = subprocess.run(
        [sys.executable, "-m", "modelhost.cli", "env", "--url", url, "--dotenv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SAGEMAKER_", "BOTOCORE_")) and k != "MODELHOST_URL"
    }
    for line in printed.splitlines():
        name, _, value = line.partition("=")
        env[name] = json.loads(value) if value.startswith('"') else value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's python and aws
    return env


def _outcome(proc: subprocess.Popen[str], out: str) -> Outcome:
    return _outcome_of(proc.returncode, out)


def _outcome_of(rc: int, out: str) -> Outcome:
    result = None
    for line in out.splitlines():
        if "RESULT " in line:  # the SDK's wait prints "-"/"!" without a newline before it
            result = json.loads(line[line.index("RESULT ") + len("RESULT ") :])
    return Outcome(rc, result, out)


def _json_values(text: str) -> list[Any]:
    """Consecutive JSON documents (``[..][..]``)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


def _number(body: str) -> float:
    """The one prediction in a JSON (``[x]``, ``[[x]]``) or CSV answer."""
    text = body.strip().strip("[]").strip()
    return float(text.split(",")[0].strip("[] \n"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("mh-unmodified") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def env(server: Server) -> dict[str, str]:
    return client_environment(server.url)


# test -> the script it checks: the fixture runs only the scripts of the selected tests (-k works)
TEST_SCRIPTS = {
    "test_hf_model_data": "hf_model_data",
    "test_huggingface_tensorflow_image": "hf_tensorflow",
    "test_hf_hub_offline_cache": "hf_hub",
    "test_hf_inference_py": "hf_inference_py",
    "test_xgboost_entry_point": "xgboost",
    "test_pytorch_source_dir": "pytorch",
    "test_tensorflow_model": "tensorflow",
    "test_transformer": "transform",
    "test_predict_async": "async",
    "test_sklearn_deploy_with_default_polling": "sklearn_timed",
    "test_boto3_without_endpoint_url": "boto3",
    "test_aws_cli_without_endpoint_url": "aws_cli",
}


@pytest.fixture(scope="module")
def outcomes(
    server: Server, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Outcome]:
    selected = {
        TEST_SCRIPTS[item.originalname]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is sys.modules[__name__]
        and item.originalname in TEST_SCRIPTS
    }
    work = tmp_path_factory.mktemp("seed-work")
    expected = seed_snippets.prepare(work, server.data_dir / "hf-cache" / "hub")
    archive, sk = sklearn_model()
    (work / "sk-plain.tar.gz").write_bytes(archive)
    expected["sklearn"] = float(sk.predict([[0.01] * 10])[0])
    (work / "row.csv").write_text(",".join(["0.01"] * 10) + "\n")
    commands = {name: [sys.executable, "-c", code] for name, code in seed_snippets.scripts(HAS_TF).items()}
    commands["boto3"] = [sys.executable, "-c", BOTO3_SCRIPT]
    if shutil.which("aws", path=env["PATH"]):
        commands["aws_cli"] = ["bash", "-c", CLI_SCRIPT]
    commands = {name: cmd for name, cmd in commands.items() if name in selected}
    procs = {
        name: subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, cmd in commands.items()
    }
    results: dict[str, Outcome] = {}
    started = time.monotonic()
    deadline = started + SCRIPT_TIMEOUT
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\n[killed after {SCRIPT_TIMEOUT}s]"
        results[name] = _outcome(proc, out)
        print(f"\n[script] {name}: rc={proc.returncode} done by {time.monotonic() - started:.0f}s")
    results["_expected"] = Outcome(0, expected, "")
    for name in ("sklearn_timed", "boto3", "aws_cli"):
        r = results.get(name)
        if r is not None and r.result is not None:
            timing = {k: round(v, 2) for k, v in r.result.items() if k.endswith("_s")}
            print(f"\n[deploy timing] {name}: {timing}")
    return results


def test_modelhost_env_prints_only_configuration(env: dict[str, str], server: Server) -> None:
    assert env["AWS_ENDPOINT_URL"] == server.url
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    config = json.loads(Path(env["SAGEMAKER_USER_CONFIG_OVERRIDE"]).read_text())
    session = config["SageMaker"]["PythonSDK"]["Modules"]["Session"]
    assert session["DefaultS3Bucket"] == "sagemaker-us-east-1-123456789012"
    assert env["BOTOCORE_EXPERIMENTAL__PLUGINS"] == "modelhost=modelhost.botocore_plugin"


def test_hf_model_data(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["hf_model_data"].check()
    assert r["role"] == "arn:aws:iam::123456789012:role/modelhost"
    assert r["bucket"] == "sagemaker-us-east-1-123456789012"
    assert isinstance(r["prediction"], list) and set(r["prediction"][0]) == {"label", "score"}


def test_huggingface_tensorflow_image(outcomes: dict[str, Outcome]) -> None:
    """huggingface-tensorflow-inference: the HF toolkit's contract (seed 004), not TF Serving's."""
    r = outcomes["hf_tensorflow"].check()
    assert "/huggingface-tensorflow-inference:" in r["image"]
    assert set(r["prediction"][0]) == {"label", "score"}


def test_hf_hub_offline_cache(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["hf_hub"].check()
    assert set(r["prediction"]) >= {"score", "start", "end", "answer"}


def test_hf_inference_py(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["hf_inference_py"].check()
    assert r["prediction"]["custom"] is True and r["prediction"]["label"] in ("entailment", "neutral", "contradiction")


def test_xgboost_entry_point(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["xgboost"].check()
    got = [float(v) for row in r["prediction"] for v in row]
    want = outcomes["_expected"].check()["xgb"]
    assert len(got) == len(want) and all(abs(a - b) < 1e-3 for a, b in zip(got, want, strict=True))


def test_pytorch_source_dir(outcomes: dict[str, Outcome]) -> None:
    assert outcomes["pytorch"].check()["predictions"] == outcomes["_expected"].check()["torch"]


@pytest.mark.skipif(not HAS_TF, reason="tensorflow-cpu is not installed (the test extra installs it)")
def test_tensorflow_model(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["tensorflow"].check()
    assert r["rows"] == {"predictions": [[6.0], [3.0]]}
    assert r["columns"] == {"outputs": [[1.0]]}  # TF Serving's columnar answer


def test_transformer(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["transform"].check()
    assert r["status"] == "Completed"
    # AssembleWith unset (the seed's code): the records' answers are concatenated, as SageMaker does
    answers = _json_values("".join(r["lines"]))
    assert len(answers) == 3 and all(set(a[0]) == {"label", "score"} for a in answers)


def test_predict_async(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["async"].check()
    assert r["output_path"].startswith("s3://sagemaker-us-east-1-123456789012/async_inference/output/")
    result = json.loads(r["result"]) if isinstance(r["result"], str) else r["result"]  # the predictor decodes JSON
    assert {"label", "score"} <= set(result[0])


def test_sklearn_deploy_with_default_polling(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["sklearn_timed"].check()
    prediction = r["prediction"] if isinstance(r["prediction"], str) else json.dumps(r["prediction"])
    assert _number(prediction) == pytest.approx(outcomes["_expected"].check()["sklearn"], rel=1e-5)
    assert r["deploy_s"] >= r["ready_s"] - 1 >= r["created_s"] - 1  # times are printed, not judged


def test_boto3_without_endpoint_url(outcomes: dict[str, Outcome]) -> None:
    r = outcomes["boto3"].check()
    assert r["arn"] == "arn:aws:sts::123456789012:assumed-role/modelhost/modelhost"
    assert r["role"] == "arn:aws:iam::123456789012:role/modelhost"
    assert r["iam_error"] == "InvalidAction" and r["status"] == "InService"
    assert _number(r["prediction"]) == pytest.approx(outcomes["_expected"].check()["sklearn"], rel=1e-5)


def test_aws_cli_without_endpoint_url(outcomes: dict[str, Outcome]) -> None:
    if "aws_cli" not in outcomes:
        pytest.skip("the AWS CLI is not installed")
    r = outcomes["aws_cli"].check()
    assert r["arn"].startswith("arn:aws:sts::123456789012:assumed-role/modelhost/")
    assert r["role"] == "arn:aws:iam::123456789012:role/modelhost" and r["status"] == "InService"
    assert "InvalidAction" in r["iam_error"]
    assert _number(r["prediction"]) == pytest.approx(outcomes["_expected"].check()["sklearn"], rel=1e-5)


ROLE_SCRIPT = """
import sagemaker
sess = sagemaker.Session()
try:
    role = sagemaker.get_execution_role()
except ValueError as e:
    role = "ValueError: " + str(e)
print("RESULT " + __import__("json").dumps({"role": role, "bucket": sess.default_bucket()}))
"""


def test_signed_server_keys_and_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --credentials-file: `modelhost env` hands on this shell's keys (never the server's); a key whose
    section names a role is a session of it, so get_execution_role() works; a plain key is a user."""
    creds = tmp_path / "credentials"
    creds.write_text(
        "[deployer]\naws_access_key_id = AKIADEPLOYER\naws_secret_access_key = deployer-secret\nrole = modelhost\n"
        "[viewer]\naws_access_key_id = AKIAVIEWER\naws_secret_access_key = viewer-secret\n"
    )
    srv = Server(tmp_path / "data", credentials_file=creds).start()
    try:
        got = {}
        for user, secret in (("DEPLOYER", "deployer-secret"), ("VIEWER", "viewer-secret")):
            # this shell's AWS configuration, which `modelhost env` resolves
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", f"AKIA{user}")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            env = client_environment(srv.url)
            assert env["AWS_ACCESS_KEY_ID"] == f"AKIA{user}" and env["AWS_SECRET_ACCESS_KEY"] == secret
            proc = subprocess.run(
                [sys.executable, "-c", ROLE_SCRIPT], env=env, capture_output=True, text=True, timeout=120
            )
            out = _outcome_of(proc.returncode, proc.stdout + proc.stderr).check()
            got[user] = out
        assert got["DEPLOYER"] == {
            "role": "arn:aws:iam::123456789012:role/modelhost",
            "bucket": "sagemaker-us-east-1-123456789012",
        }
        assert got["VIEWER"]["role"].startswith("ValueError: The current AWS identity is not a role")
        assert "arn:aws:iam::123456789012:user/viewer" in got["VIEWER"]["role"]
    finally:
        srv.stop()
