"""The ONNX runtime (``modelhost/onnx`` and the ONNX repository names in ``serving/images.py``).

Model: ``model.onnx``, else the one ``*.onnx`` file in the model dir, run by onnxruntime on the CPU
(``CPUExecutionProvider``; ``MODELHOST_ONNX_THREADS`` sets intra-op threads).

Requests (``input_fn`` only decodes; which model input gets what is decided in ``predict_fn``):

* JSON ``{"inputs": {"<name>": ..., ...}}`` or ``{"<name>": ..., ...}`` (keys are model input names) feed
  those inputs; ``{"inputs": <array>}``, ``{"instances": <array>}`` or a bare array feed the first input;
* CSV and NPY feed the first input; NPZ feeds its arrays by name (or its single array to the first input).

Values are cast to each input's element type; one missing leading (batch) dimension is added, so ``[1, 2, 3]``
works for a ``[batch, 3]`` input. Response JSON: the single output's value, or ``{"<output>": value, ...}``
when the model has several outputs; CSV/NPY need a single output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelhost.serving import codecs
from modelhost.serving.batch_predict import offsets, run_batched
from modelhost.serving.errors import BadRequest, UnsupportedAccept
from modelhost.serving.runtimes import Runtime

DEFAULT_MODEL_FILENAME = "model.onnx"

# onnxruntime's element type names -> numpy dtypes.
ONNX_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    shape: tuple[Any, ...]  # ints, symbolic dim names or None

    @property
    def dtype(self) -> Any:
        return ONNX_DTYPES.get(self.type)


@dataclass(frozen=True)
class Positional:
    """A request value meant for the model's first input."""

    value: Any


class OnnxModel:
    """An InferenceSession plus what requests are checked against."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.inputs = [InputSpec(i.name, i.type, tuple(i.shape)) for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]

    def feeds(self, data: Any) -> dict[str, Any]:
        """Request data (a name -> value dict or a Positional) -> onnxruntime feeds."""
        by_name = {i.name: i for i in self.inputs}
        if isinstance(data, dict):
            for envelope in ("inputs", "instances"):  # {"inputs": ...} unless a model input has that name
                if envelope in data and envelope not in by_name:
                    inner = data[envelope]
                    data = inner if isinstance(inner, dict) else Positional(inner)
                    break
        if isinstance(data, Positional):
            if not self.inputs:
                raise BadRequest("the model has no inputs")
            if len(self.inputs) > 1:
                names = ", ".join(by_name)
                raise BadRequest(
                    f"the model has {len(self.inputs)} inputs ({names}); send a JSON object keyed by input name, "
                    'e.g. {"inputs": {"' + self.inputs[0].name + '": ...}}'
                )
            data = {self.inputs[0].name: data.value}
        if not isinstance(data, dict):
            raise BadRequest(f"expected a JSON object keyed by input name or an array, got {type(data).__name__}")
        unknown = [k for k in data if k not in by_name]
        if unknown:
            raise BadRequest(f"unknown model input(s) {unknown}; the model's inputs are {list(by_name)}")
        missing = [n for n in by_name if n not in data]
        if missing:
            raise BadRequest(f"missing model input(s) {missing}; the model's inputs are {list(by_name)}")
        return {name: _cast(by_name[name], value) for name, value in data.items()}

    def run(self, data: Any) -> dict[str, Any]:
        return self.run_feeds(self.feeds(data))

    def run_feeds(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))

    def batchable(self) -> bool:
        """Every input has a dynamic first (batch) dimension, so requests can be stacked along it."""
        return bool(self.inputs) and all(
            spec.shape and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0) for spec in self.inputs
        )


def _cast(spec: InputSpec, value: Any) -> Any:
    dtype = spec.dtype
    try:
        if dtype is np.object_:
            arr = np.asarray(value, dtype=object)
        elif dtype is not None:
            arr = np.asarray(value, dtype=dtype)
        else:
            return value  # sequence/map inputs: as sent
    except (TypeError, ValueError) as e:
        raise BadRequest(f"input {spec.name!r}: cannot convert the value to {spec.type}: {e}") from e
    rank = len(spec.shape)
    if spec.shape and arr.ndim == rank - 1:
        arr = arr[np.newaxis, ...]  # a single example for a batched input
    want, got = list(spec.shape), list(arr.shape)
    if spec.shape and arr.ndim != rank:
        raise BadRequest(f"input {spec.name!r}: expected {rank} dimensions {want}, got shape {got}")
    for axis, (size, actual) in enumerate(zip(want, got, strict=True)):
        if isinstance(size, int) and size > 0 and size != actual:
            raise BadRequest(f"input {spec.name!r}: dimension {axis} must be {size} (shape {want}), got shape {got}")
    return arr


def _model_path(model_dir: str) -> Path:
    base = Path(model_dir)
    path = base / DEFAULT_MODEL_FILENAME
    if path.is_file():
        return path
    files = sorted(p.name for p in base.iterdir() if p.is_file() and p.suffix == ".onnx")
    if len(files) != 1:
        raise ValueError(f"Exactly one .onnx file (or model.onnx) is required for ONNX models: {files}")
    return base / files[0]


def model_fn(model_dir: str) -> OnnxModel:
    options = ort.SessionOptions()
    threads = os.environ.get("MODELHOST_ONNX_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(_model_path(model_dir)), options, providers=["CPUExecutionProvider"])
    return OnnxModel(session)


def decode_request(data: Any, content_type: str) -> Any:
    """The body as a dict (input names, or an ``inputs``/``instances`` envelope) or a Positional (first input)."""
    mt = codecs.media_type(content_type)
    if mt == codecs.JSON:
        try:
            value = json.loads(data)
        except ValueError as e:
            raise BadRequest(f"Failed to decode {codecs.JSON} body: {e}") from e
        return value if isinstance(value, dict) else Positional(value)
    decoded = codecs.decode(data, content_type)
    if isinstance(decoded, dict):  # NPZ with several arrays
        return decoded
    return Positional(decoded)


def input_fn(data: Any, content_type: str) -> Any:
    return decode_request(data, content_type)


def predict_fn(data: Any, model: OnnxModel) -> dict[str, Any]:
    if not isinstance(data, Positional | dict):
        data = Positional(data)  # a user input_fn returned an array
    return model.run(data)


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    if isinstance(prediction, dict) and prediction:
        outputs = prediction
        if len(outputs) == 1:
            prediction = next(iter(outputs.values()))
        elif codecs.select_accept(accept) != codecs.JSON:
            raise UnsupportedAccept(accept, [codecs.JSON])  # several outputs: only JSON can carry them
    return codecs.encode(prediction, accept)


def _feeds_key(feeds: dict[str, Any]) -> Any:
    if not all(isinstance(v, np.ndarray) and v.ndim >= 1 and v.dtype != object for v in feeds.values()):
        return None
    if len({v.shape[0] for v in feeds.values()}) != 1:
        return None
    return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(feeds.items()))


def _combine_feeds(parts: list[dict[str, Any]]) -> tuple[dict[str, Any], list[int]]:
    sizes = [next(iter(p.values())).shape[0] for p in parts]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, sizes


def _split_outputs(outputs: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]] | None:
    total = sum(sizes)
    if not all(isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == total for v in outputs.values()):
        return None
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in offsets(sizes)]


def predict_batch(datas: list[Any], model: OnnxModel) -> list[Any]:
    """The requests' feeds stacked along the batch dimension (when the model's inputs have a dynamic one)."""
    if not model.batchable():
        return [_try(predict_fn, data, model) for data in datas]
    feeds: list[Any] = []
    for data in datas:
        try:
            feeds.append(model.feeds(data if isinstance(data, Positional | dict) else Positional(data)))
        except Exception as e:
            feeds.append(e)
    return run_batched(feeds, model, lambda f, m: m.run_feeds(f), _feeds_key, _combine_feeds, _split_outputs)


def _try(fn: Any, data: Any, model: Any) -> Any:
    try:
        return fn(data, model)
    except Exception as e:
        return e


RUNTIME = Runtime(
    name="onnx",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    predict_batch=predict_batch,
)
