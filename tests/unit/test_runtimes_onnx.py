"""ONNX runtime: request bodies -> model inputs, outputs -> JSON/CSV/NPY."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from modelhost.serving.errors import BadRequest, UnsupportedAccept
from modelhost.serving.runtimes import get_runtime
from modelhost.serving.runtimes.onnx import OnnxModel, Positional, decode_request
from tests.runtime_artifacts import onnx_gemm_bytes

W = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], dtype=np.float32)
B = np.array([0.5, -0.5], dtype=np.float32)
RT = get_runtime("onnx")


def _two_inputs_model() -> bytes:
    """sum = a + b (float [batch, 2]); count = Shape(ids) (int64 input ``ids`` [batch])."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Shape", ["ids"], ["count"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("count", TensorProto.INT64, [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    d = tmp_path_factory.mktemp("onnx1")
    (d / "model.onnx").write_bytes(onnx_gemm_bytes(W, B))
    model = RT.model_fn(str(d))
    assert isinstance(model, OnnxModel)
    return model


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    d = tmp_path_factory.mktemp("onnx2")
    (d / "anything.onnx").write_bytes(_two_inputs_model())  # the single *.onnx file, not named model.onnx
    return RT.model_fn(str(d))


def _call(
    model: OnnxModel, body: bytes | str, content_type: str = "application/json", accept: str = "application/json"
) -> tuple[bytes, str]:
    return RT.output_fn(RT.predict_fn(RT.input_fn(body, content_type), model), accept)


def _expected(x: list[list[float]]) -> np.ndarray:
    return np.asarray(x, np.float32) @ W.T + B


@pytest.mark.parametrize(
    "body",
    [
        [[1, 2, 3], [4, 5, 6]],
        {"inputs": [[1, 2, 3], [4, 5, 6]]},
        {"instances": [[1, 2, 3], [4, 5, 6]]},
        {"input": [[1, 2, 3], [4, 5, 6]]},
        {"inputs": {"input": [[1, 2, 3], [4, 5, 6]]}},
    ],
)
def test_json_forms_feed_the_input(linear: OnnxModel, body: object) -> None:
    out, ct = _call(linear, json.dumps(body))
    assert ct == "application/json"
    np.testing.assert_allclose(json.loads(out), _expected([[1, 2, 3], [4, 5, 6]]), rtol=1e-6)


def test_single_row_gets_a_batch_dimension(linear: OnnxModel) -> None:
    out, _ = _call(linear, "[1, 2, 3]")
    np.testing.assert_allclose(json.loads(out), _expected([[1, 2, 3]]), rtol=1e-6)


def test_csv_and_npy(linear: OnnxModel) -> None:
    out, ct = _call(linear, "1,2,3\n4,5,6\n", "text/csv", "text/csv")
    assert ct == "text/csv"
    got = np.array([[float(v) for v in line.split(",")] for line in out.decode().splitlines()])
    np.testing.assert_allclose(got, _expected([[1, 2, 3], [4, 5, 6]]), rtol=1e-6)
    buf = io.BytesIO()
    np.save(buf, np.array([[1, 2, 3]], dtype=np.float64))  # cast to the input's float32
    out, ct = _call(linear, buf.getvalue(), "application/x-npy", "application/x-npy")
    arr = np.load(io.BytesIO(out))
    assert ct == "application/x-npy" and arr.dtype == np.float32
    np.testing.assert_allclose(arr, _expected([[1, 2, 3]]), rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"nope": [[1, 2, 3]]}, "unknown model input"),
        ([[1, 2]], "dimension 1 must be 3"),
        ([[[1, 2, 3]]], "expected 2 dimensions"),
        ([["a", "b", "c"]], "cannot convert"),
    ],
)
def test_bad_requests(linear: OnnxModel, body: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        _call(linear, json.dumps(body))


def test_named_inputs_and_all_outputs(multi: OnnxModel) -> None:
    body = {"a": [[1, 2]], "b": [[10, 20]], "ids": [7, 8, 9]}
    out, _ = _call(multi, json.dumps(body))
    assert json.loads(out) == {"sum": [[11.0, 22.0]], "count": [3]}
    out, _ = _call(multi, json.dumps({"inputs": body}))
    assert json.loads(out) == {"sum": [[11.0, 22.0]], "count": [3]}
    with pytest.raises(BadRequest, match="3 inputs"):
        _call(multi, "[[1, 2]]")
    with pytest.raises(BadRequest, match="missing model input"):
        _call(multi, json.dumps({"a": [[1, 2]], "b": [[1, 2]]}))
    with pytest.raises(UnsupportedAccept):
        _call(multi, json.dumps(body), accept="text/csv")
    buf = io.BytesIO()
    np.savez(buf, a=np.ones((1, 2)), b=np.ones((1, 2)), ids=np.arange(4))
    out, _ = _call(multi, buf.getvalue(), "application/x-npz")
    assert json.loads(out) == {"sum": [[2.0, 2.0]], "count": [4]}


def test_decode_request() -> None:
    assert decode_request("[1]", "application/json") == Positional([1])
    assert decode_request('{"x": 1}', "application/json; charset=utf-8") == {"x": 1}
    with pytest.raises(BadRequest):
        decode_request("{", "application/json")


def test_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Exactly one .onnx"):
        RT.model_fn(str(tmp_path))
    (tmp_path / "a.onnx").write_bytes(onnx_gemm_bytes(W, B))
    (tmp_path / "b.onnx").write_bytes(onnx_gemm_bytes(W, B))
    with pytest.raises(ValueError, match=r"\['a.onnx', 'b.onnx'\]"):
        RT.model_fn(str(tmp_path))
