"""The seeds' client code (000: the Hugging Face guide, 002: the book chapter, 004: the HF toolkit) as
scripts, each run as its own process with nothing but the environment ``modelhost env`` prints: no
``import modelhost``, no endpoint_url, every one starting from ``role = sagemaker.get_execution_role()``
and ``sess = sagemaker.Session()``. Each prints one ``RESULT {json}`` line the test checks.

The artifacts they deploy are built beforehand in their working directory (``prepare``): tiny models
with random weights, as the seeds' own "model.tar.gz you trained earlier".
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests import hf_models
from tests.helpers import diabetes

HF_VERSIONS = 'transformers_version="4.26", pytorch_version="1.13", py_version="py39"'
HUB_REPO = "modelhost-seeds/tiny-squad"
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"

PRELUDE = """\
import json, os, time
import sagemaker

role = sagemaker.get_execution_role()
sess = sagemaker.Session()

def report(**values):
    print("RESULT " + json.dumps(values, default=str), flush=True)
"""

HF_MODEL_DATA = """
from sagemaker.huggingface.model import HuggingFaceModel

model_data = sess.upload_data("hf-model.tar.gz", key_prefix="seeds/hf-model-data")
huggingface_model = HuggingFaceModel(
   model_data=model_data,
   role=role,
   {versions},
)
predictor = huggingface_model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge")
data = {{
   "inputs": "Camera - You are awarded a SiPix Digital Camera! call 09061221066 fromm landline. "
   "Delivery within 28 days."
}}
report(role=role, bucket=sess.default_bucket(), prediction=predictor.predict(data))
predictor.delete_endpoint()
"""

HF_TENSORFLOW = """
from sagemaker.huggingface.model import HuggingFaceModel

model_data = sess.upload_data("hf-model.tar.gz", key_prefix="seeds/hf-tensorflow")
huggingface_model = HuggingFaceModel(
   model_data=model_data, role=role, transformers_version="4.26", tensorflow_version="2.11", py_version="py39")
predictor = huggingface_model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge")
image = sess.sagemaker_client.describe_model(ModelName=huggingface_model.name)["PrimaryContainer"]["Image"]
report(image=image, prediction=predictor.predict({{"inputs": "this movie is amazing"}}))
predictor.delete_endpoint()
"""

HF_HUB = """
from sagemaker.huggingface.model import HuggingFaceModel

hub = {{
  'HF_MODEL_ID': '{repo}',
  'HF_MODEL_REVISION': '{revision}',
  'HF_HUB_OFFLINE': '1',
  'HF_TASK': 'question-answering'
}}
huggingface_model = HuggingFaceModel(env=hub, role=role, {versions})
predictor = huggingface_model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge")
data = {{
"inputs": {{
    "question": "What is used for inference?",
    "context": "My Name is Philipp and I live in Nuremberg. This model is used with sagemaker for inference."
    }}
}}
report(prediction=predictor.predict(data))
predictor.delete_endpoint()
"""

INFERENCE_PY = """\
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sagemaker_huggingface_inference_toolkit import decoder_encoder


def model_fn(model_dir):
    return AutoModelForSequenceClassification.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def input_fn(input_data, content_type):
    data = decoder_encoder.decode(input_data, content_type)
    return data


def predict_fn(data, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with torch.no_grad():
        logits = model(**tokenizer(data["inputs"], return_tensors="pt")).logits
    return {"label": model.config.id2label[int(logits.argmax())], "custom": True}


def output_fn(prediction, accept):
    response = decoder_encoder.encode(prediction, accept)
    return response
"""

HF_INFERENCE_PY = """
from sagemaker.huggingface.model import HuggingFaceModel

model_data = sess.upload_data("hf-code.tar.gz", key_prefix="seeds/hf-code")
huggingface_model = HuggingFaceModel(model_data=model_data, role=role, {versions})
predictor = huggingface_model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge")
report(prediction=predictor.predict({{"inputs": "this movie is amazing"}}))
predictor.delete_endpoint()
"""

XGBOOST = """
from sagemaker.xgboost.model import XGBoostModel
from sagemaker.serializers import CSVSerializer
from sagemaker.deserializers import CSVDeserializer

model_path = sess.upload_data("xgb-model.tar.gz", key_prefix="seeds/xgboost")
xgb_model = XGBoostModel(
    model_data=model_path,
    entry_point='xgb-script.py',
    framework_version='1.3-1',
    role=sagemaker.get_execution_role())
xgb_predictor = xgb_model.deploy(
    initial_instance_count=1, instance_type='ml.m5.large', serializer=CSVSerializer(), deserializer=CSVDeserializer())
report(prediction=xgb_predictor.predict([[float(v) for v in line.split(",")] for line in open("rows.csv")]))
xgb_predictor.delete_endpoint()
"""

XGB_SCRIPT = """\
import os
import xgboost as xgb

def model_fn(model_dir):
    model = xgb.Booster()
    model.load_model(os.path.join(model_dir, 'xgboost-model'))
    return model
"""

PYTORCH = """
from sagemaker.pytorch import PyTorchModel
from sagemaker.serializers import JSONSerializer
from sagemaker.deserializers import JSONDeserializer

model_data_uri = sess.upload_data("pt-model.tar.gz", key_prefix="seeds/pytorch")
model = PyTorchModel(
    model_data=model_data_uri,
    role=sagemaker.get_execution_role(),
    entry_point='torchserve-predictor.py',
    source_dir='src',
    framework_version='1.6.0',
    py_version='py36')
predictor = model.deploy(
    initial_instance_count=1, instance_type='ml.m5.xlarge',
    serializer=JSONSerializer(), deserializer=JSONDeserializer())
report(predictions=[predictor.predict({"features": f}) for f in ([1.0, 0.0, -1.0, 2.0], [-3.0, 1.0, 0.5, 0.0])])
predictor.delete_endpoint()
"""

TORCH_PREDICTOR = """\
import json, os, torch
from helper import CLASS_NAMES

def model_fn(model_dir):
    net = torch.nn.Linear(4, 2)
    net.load_state_dict(torch.load(os.path.join(model_dir, 'weights.pth')))
    return net.eval()

def input_fn(body, content_type='application/json'):
    if content_type == 'application/json':
        return json.loads(body)
    raise Exception('Unsupported input type: ' + content_type)

def predict_fn(data, model):
    with torch.no_grad():
        logits = model(torch.tensor([data['features']], dtype=torch.float32))
    return CLASS_NAMES[int(torch.argmax(logits, dim=1))]

def output_fn(prediction, accept='application/json'):
    return json.dumps(prediction), accept
"""

TENSORFLOW = """
# The artifact: a SavedModel in TF Serving's layout (model.tar.gz with 1/saved_model.pb), built here with TF.
import tarfile
import tensorflow as tf

class Model(tf.Module):
    def __init__(self):
        self.w = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.matmul(x, self.w)}

m = Model()
tf.saved_model.save(m, "tf-export/1", signatures={"serving_default": m.__call__})
with tarfile.open("tf-model.tar.gz", "w:gz") as tar:
    tar.add("tf-export/1", arcname="1")

# The book's code
from sagemaker.tensorflow.model import TensorFlowModel

model_path = sess.upload_data("tf-model.tar.gz", key_prefix="seeds/tensorflow")
tf_model = TensorFlowModel(
    model_data=model_path,
    framework_version='2.3.1',
    role=sagemaker.get_execution_role())
tf_predictor = tf_model.deploy(initial_instance_count=1, instance_type='ml.m5.large')
report(rows=tf_predictor.predict({"instances": [[1, 1, 1], [0, 0, 1]]}),
       columns=tf_predictor.predict({"inputs": [[1, 0, 0]]}))
tf_predictor.delete_endpoint()
"""

TRANSFORM = """
from sagemaker.huggingface.model import HuggingFaceModel

model_data = sess.upload_data("hf-model.tar.gz", key_prefix="seeds/transform")
data = sess.upload_data("input.jsonl", key_prefix="seeds/transform/samples")
huggingface_model = HuggingFaceModel(model_data=model_data, role=role, {versions})
batch_job = huggingface_model.transformer(
    instance_count=1,
    instance_type='ml.p3.2xlarge',
    strategy='SingleRecord'
)
batch_job.transform(
    data=data,
    content_type='application/json',
    split_type='Line'
)
out = batch_job.output_path.rstrip("/") + "/input.jsonl.out"
bucket, key = out[len("s3://"):].split("/", 1)
report(status=sess.describe_transform_job(batch_job.latest_transform_job.name)["TransformJobStatus"],
       lines=sess.read_s3_file(bucket, key).splitlines())
"""

SEED_JSONL = "".join(
    json.dumps({"inputs": t}) + "\n"
    for t in ("this movie is terrible", "this movie is amazing", "SageMaker is pretty cool")
)

ASYNC = """
from sagemaker.async_inference import AsyncInferenceConfig
from sagemaker.huggingface.model import HuggingFaceModel

model_data = sess.upload_data("hf-model.tar.gz", key_prefix="seeds/async")
huggingface_model = HuggingFaceModel(model_data=model_data, role=role, {versions})
async_config = AsyncInferenceConfig(output_path=f"s3://{{sess.default_bucket()}}/async_inference/output")
predictor = huggingface_model.deploy(
    initial_instance_count=1, instance_type="ml.m5.xlarge", async_inference_config=async_config)
response = predictor.predict_async(data={{"inputs": "this movie is amazing"}})
from sagemaker.exceptions import ObjectNotExistedError

# get_result() without a WaiterConfig looks once; with one, the SDK also waits on the failure path in a
# thread that keeps the process alive for max_attempts x delay after the result came (as against AWS).
for _ in range(600):  # up to 5 minutes: CI runs these scripts side by side on 2 cores
    try:
        result = response.get_result()
        break
    except ObjectNotExistedError:
        time.sleep(0.5)
report(output_path=response.output_path, result=result)
predictor.delete_endpoint()
"""

SKLEARN_ENTRY = """\
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""

SKLEARN_TIMED = """
from sagemaker.sklearn.model import SKLearnModel

model_data = sess.upload_data("sk-model.tar.gz", key_prefix="seeds/sklearn")
model = SKLearnModel(model_data=model_data, role=role, entry_point="entry.py", framework_version="1.2-1")
started = time.time()
predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large")
returned = time.time()
desc = sess.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
ready, created = desc["LastModifiedTime"].timestamp(), desc["CreationTime"].timestamp()
report(deploy_s=returned - started, created_s=created - started, ready_s=ready - started, late_s=returned - ready,
       prediction=predictor.predict([[0.01] * 10]))
predictor.delete_endpoint()
"""


def scripts(with_tensorflow: bool) -> dict[str, str]:
    """name -> the whole script (the prelude, then the seed's code)."""
    fill = {"versions": HF_VERSIONS, "repo": HUB_REPO, "revision": HUB_REVISION}
    bodies = {
        "hf_model_data": HF_MODEL_DATA.format(**fill),
        "hf_hub": HF_HUB.format(**fill),
        "hf_tensorflow": HF_TENSORFLOW.format(**fill),
        "hf_inference_py": HF_INFERENCE_PY.format(**fill),
        "xgboost": XGBOOST,
        "pytorch": PYTORCH,
        "transform": TRANSFORM.format(**fill),
        "async": ASYNC.format(**fill),
        "sklearn_timed": SKLEARN_TIMED,
    }
    if with_tensorflow:
        bodies["tensorflow"] = TENSORFLOW
    return {name: PRELUDE + body for name, body in bodies.items()}


def _tar(path: Path, files: dict[str, Path]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, src in files.items():
            tar.add(src, arcname=name)


def prepare(work: Path, hub_cache: Path) -> dict[str, object]:
    """Build every artifact the scripts upload (in ``work``) and fill the server's Hub cache; returns
    what the test needs to check answers (the XGBoost rows' expected predictions, the PyTorch net)."""
    import joblib
    import torch
    import xgboost as xgb
    from sklearn.linear_model import LinearRegression

    work.mkdir(parents=True, exist_ok=True)
    nli = hf_models.nli_classifier(work / "nli")
    _tar(work / "hf-model.tar.gz", {p.name: p for p in nli.iterdir()})
    (work / "code").mkdir()
    (work / "code" / "inference.py").write_text(INFERENCE_PY)
    _tar(work / "hf-code.tar.gz", {**{p.name: p for p in nli.iterdir()}, "code": work / "code"})
    qa = hf_models.bert(work / "qa", "BertForQuestionAnswering")
    hf_models.fill_hub_cache(hub_cache, HUB_REPO, qa, HUB_REVISION)
    (work / "input.jsonl").write_text(SEED_JSONL)

    x, y = diabetes()
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(x, label=y), num_boost_round=10)
    booster.save_model(str(work / "xgboost-model"))
    _tar(work / "xgb-model.tar.gz", {"xgboost-model": work / "xgboost-model"})
    (work / "xgb-script.py").write_text(XGB_SCRIPT)
    rows = [[float(f"{v}") for v in row] for row in x[:3]]
    (work / "rows.csv").write_text("".join(",".join(repr(v) for v in r) + "\n" for r in rows))

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    torch.save(net.state_dict(), work / "weights.pth")
    _tar(work / "pt-model.tar.gz", {"weights.pth": work / "weights.pth"})
    (work / "src").mkdir()
    (work / "src" / "torchserve-predictor.py").write_text(TORCH_PREDICTOR)
    (work / "src" / "helper.py").write_text("CLASS_NAMES = ['negative', 'positive']\n")
    with torch.no_grad():
        classes = [
            ["negative", "positive"][int(torch.argmax(net(torch.tensor([f]))))]
            for f in ([1.0, 0.0, -1.0, 2.0], [-3.0, 1.0, 0.5, 0.0])
        ]

    joblib.dump(LinearRegression().fit(x, y), work / "model.joblib")
    _tar(work / "sk-model.tar.gz", {"model.joblib": work / "model.joblib"})
    (work / "entry.py").write_text(SKLEARN_ENTRY)
    return {"xgb": booster.predict(xgb.DMatrix(rows)).tolist(), "torch": classes}
