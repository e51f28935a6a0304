"""Multi-model endpoints against the real server: the sagemaker SDK's MultiDataModel (add_model,
list_models, predict(target_model=...)) over 50 scikit-learn models on 2 instances, SageMaker's
errors, eviction under a small memory budget, single-flight loading, affinity, a model added to the
prefix after the endpoint exists, and ModelCacheSetting Disabled."""

from __future__ import annotations

import io
import json
import os
import random
import re
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from botocore.exceptions import ClientError

import modelhost
from tests.helpers import SKLEARN_IMAGE, Server, diabetes

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
ROLE = "arn:aws:iam::123456789012:role/modelhost-mme"
MODELS = 50
SLOW_ENTRY = """
import os, time, joblib

def model_fn(model_dir):
    time.sleep(float(open(os.path.join(model_dir, "delay")).read()))
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def _model_tar(offset: float, padding_mb: int = 0, extra: dict[str, str] | None = None) -> tuple[bytes, Any]:
    """A LinearRegression whose predictions are shifted by ``offset`` (so every model answers differently),
    optionally carrying ``padding_mb`` of parameters (memory the instance really uses once it is loaded)."""
    from sklearn.linear_model import LinearRegression

    x, y = diabetes()
    model = LinearRegression().fit(x, y + offset)
    if padding_mb:
        model.padding_ = np.random.default_rng(int(offset)).random(padding_mb * 1024 * 1024 // 8)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    files = {"model.joblib": buf.getvalue(), **{k: v.encode() for k, v in (extra or {}).items()}}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:  # random padding: level 9 is slow
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), model


def metric(server: Server, name: str, endpoint: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def invoke_raw(server: Server, endpoint: str, target: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"{server.url}/endpoints/{endpoint}/invocations",
        data=body,
        method="POST",
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": target},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def sess(server: Server) -> Iterator[Any]:
    yield modelhost.sagemaker_session(server.url)


@pytest.fixture(scope="module")
def mme(sess: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """50 models added with MultiDataModel.add_model, deployed on 2 instances."""
    from sagemaker.multidatamodel import MultiDataModel
    from sagemaker.predictor import Predictor

    tmp = tmp_path_factory.mktemp("mme")
    prefix = f"s3://{sess.default_bucket()}/mme-models/"
    mdm = MultiDataModel(
        name="mme-sklearn",
        model_data_prefix=prefix,
        image_uri=SKLEARN_IMAGE,
        role=ROLE,
        sagemaker_session=sess,
        predictor_cls=Predictor,
        env={"MODELHOST_MME_LOAD_WAIT": "3"},
    )
    models = {}
    for i in range(MODELS):
        data, model = _model_tar(100.0 * i)
        path = tmp / f"model-{i}.tar.gz"
        path.write_bytes(data)
        name = f"team-{i % 3}/model-{i}.tar.gz"
        mdm.add_model(str(path), name)
        models[name] = model
    predictor = mdm.deploy(initial_instance_count=2, instance_type="ml.m5.large", endpoint_name="mme-sklearn")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import CSVSerializer

    predictor.serializer, predictor.deserializer = CSVSerializer(), JSONDeserializer()
    return {"mdm": mdm, "predictor": predictor, "models": models, "prefix": prefix, "tmp": tmp}


def test_multidatamodel_add_list_predict(server: Server, mme: dict[str, Any]) -> None:
    x, _ = diabetes()
    assert sorted(mme["mdm"].list_models()) == sorted(mme["models"])
    for name in list(mme["models"])[:10]:
        got = mme["predictor"].predict(x[:2], target_model=name)
        assert np.allclose(got, mme["models"][name].predict(x[:2]))
    desc = mme["predictor"].sagemaker_session.sagemaker_client.describe_model(ModelName="mme-sklearn")
    assert desc["PrimaryContainer"]["Mode"] == "MultiModel"
    assert desc["PrimaryContainer"]["ModelDataUrl"] == mme["prefix"]
    hits_before = metric(server, "modelhost_model_cache_hit_total", "mme-sklearn")
    mme["predictor"].predict(x[:1], target_model=list(mme["models"])[0])
    assert metric(server, "modelhost_model_cache_hit_total", "mme-sklearn") == hits_before + 1
    assert metric(server, "modelhost_loaded_model_count", "mme-sklearn") >= 10
    for name in ("model_loading_time", "model_downloading_time", "model_loading_wait_time"):
        assert metric(server, f"modelhost_{name}_microseconds_count", "mme-sklearn") >= 10


def test_all_fifty_models_and_affinity(server: Server, mme: dict[str, Any]) -> None:
    """Every model answers; each one is loaded on one instance only while both are healthy, though its
    requests arrive concurrently with others (a least-busy choice would load many on both)."""
    x, _ = diabetes()
    body = ",".join(repr(float(v)) for v in x[0]).encode()
    loads_before = metric(server, "modelhost_model_loading_time_microseconds_count", "mme-sklearn")
    loaded_before = metric(server, "modelhost_loaded_model_count", "mme-sklearn")
    work = [name for name in mme["models"] for _ in range(4)]
    random.Random(7).shuffle(work)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda n: (n, invoke_raw(server, "mme-sklearn", n, body)), work))
    for name, (status, out) in answers:
        assert status == 200, out
        assert np.allclose(json.loads(out), mme["models"][name].predict(x[:1]))
    loads = metric(server, "modelhost_model_loading_time_microseconds_count", "mme-sklearn") - loads_before
    loaded = metric(server, "modelhost_loaded_model_count", "mme-sklearn")
    assert loaded == MODELS  # one copy of each, none on both instances
    assert loads == MODELS - loaded_before


def test_errors(server: Server, mme: dict[str, Any], sess: Any) -> None:
    _, rt = server.clients()
    bucket = sess.default_bucket()
    body = b"0,0,0,0,0,0,0,0,0,0"
    with pytest.raises(ClientError) as missing:
        rt.invoke_endpoint(EndpointName="mme-sklearn", Body=body, ContentType="text/csv", TargetModel="nope.tar.gz")
    err = missing.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert err["Message"].startswith(f"Failed to download model data(bucket: {bucket}, key: mme-models/nope.tar.gz)")
    with pytest.raises(ClientError) as untargeted:
        rt.invoke_endpoint(EndpointName="mme-sklearn", Body=body, ContentType="text/csv")
    assert untargeted.value.response["Error"]["Code"] == "ValidationError"
    assert "multi-model endpoint" in untargeted.value.response["Error"]["Message"]
    # a model that fails to load: ModelError with the loader's message
    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.joblib")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"junk!"))
    server.put_object(f"{mme['prefix']}broken.tar.gz", broken.getvalue())
    with pytest.raises(ClientError) as failed:
        rt.invoke_endpoint(EndpointName="mme-sklearn", Body=body, ContentType="text/csv", TargetModel="broken.tar.gz")
    resp = failed.value.response
    assert resp["Error"]["Code"] == "ModelError"
    assert "Failed to load model" in resp["OriginalMessage"]
    # still loading past the wait budget (3 s here): ModelNotReadyException, and the load goes on
    slow, model = _model_tar(7.0, extra={"code/inference.py": SLOW_ENTRY, "delay": "6"})
    server.put_object(f"{mme['prefix']}slow.tar.gz", slow)
    with pytest.raises(ClientError) as not_ready:
        rt.invoke_endpoint(EndpointName="mme-sklearn", Body=body, ContentType="text/csv", TargetModel="slow.tar.gz")
    assert not_ready.value.response["Error"]["Code"] == "ModelNotReadyException"
    assert not_ready.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    time.sleep(4)
    out = rt.invoke_endpoint(EndpointName="mme-sklearn", Body=body, ContentType="text/csv", TargetModel="slow.tar.gz")
    assert np.allclose(json.loads(out["Body"].read()), model.predict(np.zeros((1, 10))))


def test_single_flight(server: Server, mme: dict[str, Any]) -> None:
    """100 concurrent first requests for one model: one load, every request answered."""
    data, model = _model_tar(3.0, extra={"code/inference.py": SLOW_ENTRY, "delay": "1.5"})
    server.put_object(f"{mme['prefix']}racing.tar.gz", data)
    loads_before = metric(server, "modelhost_model_loading_time_microseconds_count", "mme-sklearn")
    gate = threading.Barrier(100)

    def call(_: int) -> tuple[int, bytes]:
        gate.wait()
        return invoke_raw(server, "mme-sklearn", "racing.tar.gz", b"0,0,0,0,0,0,0,0,0,0")

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(call, range(100)))
    assert all(status == 200 for status, _ in answers), answers[:3]
    expected = model.predict(np.zeros((1, 10)))
    assert all(np.allclose(json.loads(out), expected) for _, out in answers)
    assert metric(server, "modelhost_model_loading_time_microseconds_count", "mme-sklearn") == loads_before + 1


def test_model_added_after_the_endpoint_exists(server: Server, mme: dict[str, Any]) -> None:
    x, _ = diabetes()
    data, model = _model_tar(12345.0)
    path: Path = mme["tmp"] / "late.tar.gz"
    path.write_bytes(data)
    mme["mdm"].add_model(str(path), "added/later.tar.gz")
    assert "added/later.tar.gz" in list(mme["mdm"].list_models())
    got = mme["predictor"].predict(x[:3], target_model="added/later.tar.gz")
    assert np.allclose(got, model.predict(x[:3]))


def _deploy(server: Server, name: str, prefix: str, env: dict[str, str], cache: str = "Enabled") -> None:
    sm, _ = server.clients()
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": SKLEARN_IMAGE,
            "Mode": "MultiModel",
            "ModelDataUrl": prefix,
            "Environment": env,
            "MultiModelConfig": {"ModelCacheSetting": cache},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def test_eviction_under_a_small_budget(server: Server, sess: Any) -> None:
    """12 models of ~4 MB each under a 20 MB budget: about 5 stay loaded (a model is charged what the
    instance's RSS grew by when it loaded, a little under its 4 MB at times), the rest are evicted least
    recently used first, and every answer is still the right model's."""
    prefix = f"s3://{sess.default_bucket()}/mme-small/"
    models = {}
    for i in range(12):
        data, model = _model_tar(1000.0 * i, padding_mb=4)
        server.put_object(f"{prefix}m{i}.tar.gz", data)
        models[f"m{i}.tar.gz"] = model
    _deploy(server, "mme-small", prefix, {"MODELHOST_MME_MEMORY_MB": "20"})
    x, _ = diabetes()
    body = ",".join(repr(float(v)) for v in x[5]).encode()
    for _round in range(2):
        for name, model in models.items():
            status, out = invoke_raw(server, "mme-small", name, body)
            assert status == 200, out
            assert np.allclose(json.loads(out), model.predict(x[5:6]))
            assert metric(server, "modelhost_loaded_model_count", "mme-small") <= 6
    # LRU with a cyclic access pattern: every request of the second round was a miss again
    assert metric(server, "modelhost_model_loading_time_microseconds_count", "mme-small") == 24
    assert metric(server, "modelhost_model_unloading_time_microseconds_count", "mme-small") >= 18
    # scaled out in place, then a blue/green update to a roomier config: the new fleet warms lazily
    sm, _ = server.clients()
    sm.update_endpoint_weights_and_capacities(
        EndpointName="mme-small", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}]
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mme-small", WaiterConfig={"Delay": 1})
    assert sm.describe_endpoint(EndpointName="mme-small")["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    for name, model in models.items():
        status, out = invoke_raw(server, "mme-small", name, body)
        assert status == 200 and np.allclose(json.loads(out), model.predict(x[5:6]))
    sm.create_model(
        ModelName="mme-small-v2",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "Mode": "MultiModel", "ModelDataUrl": prefix},
    )
    sm.create_endpoint_config(
        EndpointConfigName="mme-small-v2",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "mme-small-v2", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}
        ],
    )  # fmt: skip
    sm.update_endpoint(EndpointName="mme-small", EndpointConfigName="mme-small-v2")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mme-small", WaiterConfig={"Delay": 1})
    for name, model in models.items():
        status, out = invoke_raw(server, "mme-small", name, body)
        assert status == 200 and np.allclose(json.loads(out), model.predict(x[5:6]))
    assert metric(server, "modelhost_loaded_model_count", "mme-small") >= 12  # 8 GiB of ml.m5.large holds them all
    sm.delete_endpoint(EndpointName="mme-small")


def test_cache_disabled_unloads_after_each_invocation(server: Server, sess: Any) -> None:
    prefix = f"s3://{sess.default_bucket()}/mme-nocache/"
    data, model = _model_tar(42.0)
    server.put_object(f"{prefix}only.tar.gz", data)
    _deploy(server, "mme-nocache", prefix, {}, cache="Disabled")
    for expected_loads in (1, 2, 3):
        status, out = invoke_raw(server, "mme-nocache", "only.tar.gz", b"0,0,0,0,0,0,0,0,0,0")
        assert status == 200, out
        assert np.allclose(json.loads(out), model.predict(np.zeros((1, 10))))
        assert metric(server, "modelhost_loaded_model_count", "mme-nocache") == 0
        assert metric(server, "modelhost_model_loading_time_microseconds_count", "mme-nocache") == expected_loads
    server.clients()[0].delete_endpoint(EndpointName="mme-nocache")


def test_xgboost_runtime(server: Server, sess: Any) -> None:
    import xgboost as xgb

    from tests.helpers import XGBOOST_IMAGE

    x, y = diabetes()
    prefix = f"s3://{sess.default_bucket()}/mme-xgb/"
    boosters = {}
    for i in range(3):
        booster = xgb.train({"max_depth": 2 + i}, xgb.DMatrix(x, label=y), num_boost_round=5)
        raw = booster.save_raw("ubj")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            info = tarfile.TarInfo("xgboost-model")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(bytes(raw)))
        server.put_object(f"{prefix}xgb-{i}.tar.gz", out.getvalue())
        boosters[f"xgb-{i}.tar.gz"] = booster
    sm, rt = server.clients()
    sm.create_model(
        ModelName="mme-xgb",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": XGBOOST_IMAGE, "Mode": "MultiModel", "ModelDataUrl": prefix},
    )
    sm.create_endpoint_config(
        EndpointConfigName="mme-xgb",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "mme-xgb", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}
        ],
    )  # fmt: skip
    sm.create_endpoint(EndpointName="mme-xgb", EndpointConfigName="mme-xgb")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="mme-xgb", WaiterConfig={"Delay": 1})
    row = ",".join(f"{v}" for v in x[0])
    for name, booster in boosters.items():
        out = rt.invoke_endpoint(EndpointName="mme-xgb", Body=row, ContentType="text/csv", TargetModel=name)
        got = float(out["Body"].read().decode().strip())
        sent = np.array([[float(f"{v}") for v in x[0]]])
        assert np.isclose(got, booster.predict(xgb.DMatrix(sent))[0], atol=1e-4)
    sm.delete_endpoint(EndpointName="mme-xgb")


def test_create_model_rules(server: Server) -> None:
    sm, _ = server.clients()
    with pytest.raises(ClientError) as exc:
        sm.create_model(
            ModelName="mme-bad",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": SKLEARN_IMAGE, "MultiModelConfig": {"ModelCacheSetting": "Disabled"}},
        )
    assert (
        "MultiModelConfig can only be specified for a container with Mode MultiModel"
        in (exc.value.response["Error"]["Message"])
    )
    assert re.search("ValidationException", exc.value.response["Error"]["Code"])
