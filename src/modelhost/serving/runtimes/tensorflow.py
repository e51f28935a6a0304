"""The TensorFlow runtime (``tensorflow-inference``, ``sagemaker-tensorflow-serving``, ... images).

Those images run TensorFlow Serving. modelhost does not bundle TensorFlow: without an importable ``tensorflow``
(in the server's environment, or installed by the model's ``code/requirements.txt``) importing this module
raises ModelLoadError with the reason the endpoint fails with.

With TensorFlow, a minimal stand-in for TFS's REST predict API runs SavedModels: the model is the artifact
root, or its highest numeric version directory (``1/saved_model.pb``, the TFS layout), or
``<name>/<version>/`` (``SAGEMAKER_TFS_DEFAULT_MODEL_NAME`` picks the name). Requests are TFS ``predict``
bodies: ``{"instances": [...]}`` (row format) -> ``{"predictions": [...]}``, ``{"inputs": ...}`` (columnar)
-> ``{"outputs": ...}``, an optional ``"signature_name"`` (default ``serving_default``); a bare JSON array
or CSV rows are instances.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.serving import codecs
from modelhost.serving.errors import BadRequest, ModelLoadError, UnsupportedContentType
from modelhost.serving.runtimes import Runtime, tfs_handlers

NOT_INSTALLED = (
    "TensorFlow Serving images need TensorFlow, which is not installed in modelhost's Python environment "
    "(install tensorflow-cpu there, or list tensorflow in the model's code/requirements.txt), or serve the "
    "model with a supported image: ONNX (modelhost/onnx), PyTorch (pytorch-inference), scikit-learn, XGBoost."
)

try:
    import tensorflow as tf
except ImportError as e:
    raise ModelLoadError(f"{NOT_INSTALLED} ({type(e).__name__}: {e})") from e

DEFAULT_SIGNATURE = "serving_default"
MODEL_NAME_ENV = "SAGEMAKER_TFS_DEFAULT_MODEL_NAME"


def _versions(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()),
        key=lambda p: int(p.name),
    )


def find_saved_model(model_dir: Path) -> Path:
    if (model_dir / "saved_model.pb").is_file():
        return model_dir
    versions = _versions(model_dir)
    if versions:
        return versions[-1]
    wanted = os.environ.get(MODEL_NAME_ENV)
    for child in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        if wanted and child.name != wanted:
            continue
        versions = _versions(child)
        if versions:
            return versions[-1]
    raise FileNotFoundError(
        f"no SavedModel in {model_dir}: expected saved_model.pb, <version>/saved_model.pb or "
        "<model name>/<version>/saved_model.pb"
    )


def model_fn(model_dir: str) -> Any:
    return tf.saved_model.load(str(find_saved_model(Path(model_dir))))


@dataclass(frozen=True)
class PredictRequest:
    signature_name: str
    instances: Any = None  # row format
    inputs: Any = None  # columnar format
    columnar: bool = False


def input_fn(data: Any, content_type: str) -> PredictRequest:
    mt = codecs.media_type(content_type)
    if mt == codecs.CSV:
        return PredictRequest(DEFAULT_SIGNATURE, instances=codecs.decode_csv(data).tolist())
    if mt != codecs.JSON:
        raise UnsupportedContentType(content_type, [codecs.JSON, codecs.CSV])
    try:
        body = json.loads(data)
    except ValueError as e:
        raise BadRequest(f"Failed to decode {codecs.JSON} body: {e}") from e
    if isinstance(body, list):
        return PredictRequest(DEFAULT_SIGNATURE, instances=body)
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise BadRequest('expected a JSON object with exactly one of "instances" or "inputs", or a JSON array')
    signature = str(body.get("signature_name", DEFAULT_SIGNATURE))
    if "instances" in body:
        return PredictRequest(signature, instances=body["instances"])
    return PredictRequest(signature, inputs=body["inputs"], columnar=True)


def _signature(model: Any, name: str) -> Any:
    try:
        return model.signatures[name]
    except KeyError:
        raise BadRequest(f"unknown signature_name {name!r}; the model has {sorted(model.signatures)}") from None


def _tensor(value: Any, spec: Any) -> Any:
    try:
        return tf.constant(value, dtype=spec.dtype)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"cannot convert the value to {spec.dtype.name}: {e}") from e


def predict_fn(data: Any, model: Any) -> dict[str, Any]:
    if not isinstance(data, PredictRequest):
        data = PredictRequest(DEFAULT_SIGNATURE, instances=data)
    signature = _signature(model, data.signature_name)
    specs: dict[str, Any] = signature.structured_input_signature[1]
    names = list(specs)
    value = data.inputs if data.columnar else data.instances
    if isinstance(value, dict) and data.columnar:
        feeds = {k: _tensor(v, specs[k]) for k, v in value.items() if k in specs}
    elif not data.columnar and value and isinstance(value[0], dict):
        feeds = {k: _tensor([row[k] for row in value], specs[k]) for k in names}
    elif len(names) == 1:
        feeds = {names[0]: _tensor(value, specs[names[0]])}
    else:
        raise BadRequest(f"the signature has several inputs {names}; send them by name")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise BadRequest(f"missing input(s) {missing}")
    outputs = {k: v.numpy() for k, v in signature(**feeds).items()}
    if data.columnar:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    n = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    if codecs.select_accept(accept) == codecs.JSON or not isinstance(prediction, dict):
        return codecs.encode(prediction, accept)
    # CSV/NPY: the bare predictions/outputs array.
    return codecs.encode(np.asarray(next(iter(prediction.values()))), accept)


def rest_predict(model: Any, request: str | bytes) -> tfs_handlers.TfsResponse:
    """TF Serving's REST ``predict``: the request JSON in, ``{"predictions": ...}`` or ``{"error": ...}`` out."""
    try:
        body, _ = codecs.encode(predict_fn(input_fn(request, codecs.JSON), model), codecs.JSON)
    except BadRequest as e:
        return tfs_handlers.TfsResponse(400, json.dumps({"error": str(e)}).encode())
    return tfs_handlers.TfsResponse(200, body)


def identity(model_dir: str) -> tuple[str, str]:
    """(model name, version) as TF Serving names the SavedModel it serves."""
    found = find_saved_model(Path(model_dir))
    if found.name.isdigit():
        default = found.parent.name if found.parent != Path(model_dir) else "model"
        return tfs_handlers.model_name(default), found.name
    return tfs_handlers.model_name("model"), "1"


RUNTIME = Runtime(
    name="tensorflow",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    user_transform=tfs_handlers.make_user_transform(rest_predict, identity),
)
