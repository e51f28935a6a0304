"""The book chapter's "import and deploy an XGBoost model" flow, with boto3 instead of the SageMaker SDK.

A Booster trained locally is saved with ``save_model("xgboost-model")``, packed as ``model-xgb.tar.gz`` with the
``xgb-script.py`` inference script (what ``XGBoostModel(entry_point=...)`` repacks and configures), uploaded
to the default bucket under ``export-xgboost/``, deployed and invoked with CSV rows. Plus the algorithm-mode
variant: no script, the XGBoost image's default handlers.
"""

from __future__ import annotations

import json
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from tests.helpers import XGBOOST_IMAGE, Server, csv_row, deploy, diabetes, tarball

BUCKET = "sagemaker-us-east-1-123456789012"
MODEL_URI = f"s3://{BUCKET}/export-xgboost/model-xgb.tar.gz"

XGB_SCRIPT = """\
import os
import xgboost as xgb


def model_fn(model_dir):
    model = xgb.Booster()
    model.load_model(os.path.join(model_dir, 'xgboost-model'))
    return model
"""


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    x, y = diabetes()
    return xgb.train(
        {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.3, "seed": 0},
        xgb.DMatrix(x, label=y),
        num_boost_round=25,
    )


@pytest.fixture(scope="module")
def saved_model(booster: xgb.Booster, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """``booster.save_model("xgboost-model")`` as in the chapter (XGBoost >= 2 writes UBJSON for a bare name)."""
    path = tmp_path_factory.mktemp("xgb") / "xgboost-model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Saving model in the UBJSON format as default"
        booster.save_model(str(path))
    data = path.read_bytes()
    assert data[:1] == b"{"  # UBJSON object, not a pickle and not text JSON
    return data


def rows_and_expected(booster: xgb.Booster, start: int, n: int) -> tuple[str, np.ndarray]:
    """CSV body of ``n`` diabetes rows and the local Booster's predictions for exactly what was sent."""
    x, _ = diabetes()
    body = "\n".join(csv_row(r) for r in x[start : start + n])
    sent = np.array([[float(v) for v in line.split(",")] for line in body.splitlines()])
    return body, booster.predict(xgb.DMatrix(sent))


def test_chapter_flow_xgboost_model_with_inference_script(
    server: Server, sm: Any, rt: Any, booster: xgb.Booster, saved_model: bytes
) -> None:
    name = "xgb-chapter"
    server.put_object(MODEL_URI, tarball({"xgboost-model": saved_model, "code/xgb-script.py": XGB_SCRIPT}))
    env = {
        "SAGEMAKER_PROGRAM": "xgb-script.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": "us-east-1",
    }
    desc = deploy(sm, name, {"Image": XGBOOST_IMAGE, "ModelDataUrl": MODEL_URI, "Environment": env})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert desc["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == XGBOOST_IMAGE
    assert sm.describe_model(ModelName=name)["PrimaryContainer"]["Environment"] == env

    # Several rows; with a user script the response defaults to JSON.
    body, expected = rows_and_expected(booster, 0, 8)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert resp["ContentType"] == "application/json"
    got = np.array(json.loads(resp["Body"].read()), dtype=np.float64)
    assert got.shape == (8,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    # One row, CSV out (as the SDK's CSVSerializer/CSVDeserializer predictor would ask for).
    body, expected = rows_and_expected(booster, 100, 1)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="text/csv", Body=body)
    assert resp["ContentType"] == "text/csv"
    text = resp["Body"].read().decode()
    np.testing.assert_allclose([float(v) for v in text.split(",")], expected, rtol=1e-6)

    log = server.logs(name)
    assert "serving xgboost model" in log and "Traceback" not in log
    sm.delete_endpoint(EndpointName=name)


@pytest.mark.parametrize("fmt", ["pickle", "save_model"])
def test_algorithm_mode_without_script(
    server: Server, sm: Any, rt: Any, booster: xgb.Booster, saved_model: bytes, fmt: str
) -> None:
    """No code dir: the XGBoost image's default model_fn/input_fn/output_fn; default Accept is text/csv."""
    name = f"xgb-algo-{fmt.replace('_', '-')}"
    artifact = pickle.dumps(booster) if fmt == "pickle" else saved_model
    uri = f"s3://{BUCKET}/export-xgboost/{name}/model.tar.gz"
    server.put_object(uri, tarball({"xgboost-model": artifact}))
    desc = deploy(sm, name, {"Image": XGBOOST_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    body, expected = rows_and_expected(booster, 20, 5)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=body)
    assert resp["ContentType"] == "text/csv"
    text = resp["Body"].read().decode()
    assert "\n" not in text.strip()  # 1-D predictions: one comma-separated line, as the XGBoost container
    np.testing.assert_allclose([float(v) for v in text.split(",")], expected, rtol=1e-6)

    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="application/json", Body=body)
    assert resp["ContentType"] == "application/json"
    np.testing.assert_allclose(json.loads(resp["Body"].read()), expected, rtol=1e-6)

    # libsvm, which the XGBoost container also takes: the same rows behind a (dummy) leading label.
    sent = np.array([[float(v) for v in line.split(",")] for line in body.splitlines()])
    libsvm = "\n".join("0 " + " ".join(f"{j}:{v!r}" for j, v in enumerate(row.tolist())) for row in sent)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/libsvm", Body=libsvm)
    np.testing.assert_allclose([float(v) for v in resp["Body"].read().decode().split(",")], expected, rtol=1e-6)
    sm.delete_endpoint(EndpointName=name)
