"""PyTorch runtime: TorchScript loading (toolkit wording), tensor decoding, no_grad prediction, encoders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelhost.serving.errors import BadRequest, ModelLoadError
from modelhost.serving.handler import Handler
from modelhost.serving.runtimes import get_runtime
from tests.runtime_artifacts import state_dict_bytes, tiny_linear, torchscript_bytes

RT = get_runtime("pytorch")


@pytest.fixture(scope="module")
def linear() -> torch.nn.Module:
    return tiny_linear(seed=1, n_in=3, n_out=2)


def _expected(model: torch.nn.Module, rows: list[list[float]]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).numpy()


@pytest.mark.parametrize("filename", ["model.pt", "other.pth"])
def test_torchscript_model_json_csv_npy(tmp_path: Path, linear: torch.nn.Module, filename: str) -> None:
    (tmp_path / filename).write_bytes(torchscript_bytes(linear))
    model = RT.model_fn(str(tmp_path))
    rows = [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]

    data = RT.input_fn(json.dumps(rows), "application/json")
    assert isinstance(data, torch.Tensor) and data.dtype == torch.float32
    pred = RT.predict_fn(data, model)
    assert not pred.requires_grad  # under no_grad
    body, ct = RT.output_fn(pred, "application/json")
    assert ct == "application/json"
    np.testing.assert_allclose(json.loads(body), _expected(linear, rows), rtol=1e-6)

    body, ct = RT.output_fn(RT.predict_fn(RT.input_fn("1,2,3\n-1,0.5,0\n", "text/csv"), model), "text/csv")
    got = np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines()])
    np.testing.assert_allclose(got, _expected(linear, rows), rtol=1e-6)

    buf = io.BytesIO()
    np.save(buf, np.asarray(rows, np.float32))
    data = RT.input_fn(buf.getvalue(), "application/x-npy")
    assert data.dtype == torch.float32
    body, ct = RT.output_fn(RT.predict_fn(data, model), "application/x-npy")
    np.testing.assert_allclose(np.load(io.BytesIO(body)), _expected(linear, rows), rtol=1e-6)


def test_npy_keeps_dtype_json_is_float() -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(3, dtype=np.int64))
    assert RT.input_fn(buf.getvalue(), "application/x-npy").dtype == torch.int64
    assert RT.input_fn("[1, 2]", "application/json").dtype == torch.float32
    with pytest.raises(BadRequest, match="tensor"):
        RT.input_fn('["a"]', "application/json")


def test_structured_outputs() -> None:
    pred = {"a": torch.ones(2), "b": (torch.zeros(1), 3)}
    body, _ = RT.output_fn(pred, "application/json")
    assert json.loads(body) == {"a": [1.0, 1.0], "b": [[0.0], 3]}


def test_model_file_errors_worded_as_the_toolkit(tmp_path: Path, linear: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"Exactly one .pth or .pt file is required for PyTorch models: \[\]"):
        RT.model_fn(str(tmp_path))
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "b.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\['a.pt', 'b.pth'\]"):
        RT.model_fn(str(tmp_path))
    (tmp_path / "model.pt").write_bytes(state_dict_bytes(linear))  # a state_dict, not TorchScript
    with pytest.raises(RuntimeError, match="Please ensure model is saved using torchscript"):
        RT.model_fn(str(tmp_path))


def test_handler_reports_non_torchscript(
    tmp_path: Path, linear: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    monkeypatch.delenv("SAGEMAKER_SUBMIT_DIRECTORY", raising=False)
    (tmp_path / "model.pth").write_bytes(state_dict_bytes(linear))
    with pytest.raises(ModelLoadError) as info:
        Handler(tmp_path, "pytorch")
    assert info.value.reason == (
        f"Failed to load model: RuntimeError: Failed to load {tmp_path / 'model.pth'}. "
        "Please ensure model is saved using torchscript."
    )


def test_exported_program(tmp_path: Path, linear: torch.nn.Module) -> None:
    torch.export.save(torch.export.export(linear, (torch.zeros(1, 3),)), str(tmp_path / "model.pt2"))
    model = RT.model_fn(str(tmp_path))
    body, _ = RT.output_fn(RT.predict_fn(RT.input_fn("[[1, 2, 3]]", "application/json"), model), "application/json")
    np.testing.assert_allclose(json.loads(body), _expected(linear, [[1, 2, 3]]), rtol=1e-6)
