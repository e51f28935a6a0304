"""Artifacts for the runtime tests: a hand-written wheel, a tiny torch Linear as TorchScript / state_dict / ONNX."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any


def make_wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """A minimal pure-Python wheel (``<name>/__init__.py``) written by hand: no build backend, no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: modelhost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{name}\n".encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def tiny_linear(seed: int = 0, n_in: int = 4, n_out: int = 2) -> Any:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Linear(n_in, n_out)
    model.eval()
    return model


def torchscript_bytes(model: Any) -> bytes:
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def state_dict_bytes(model: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def onnx_bytes(model: Any, n_in: int = 4) -> bytes:
    """The Linear exported with torch.onnx (TorchScript exporter: works offline without onnxscript); if that
    exporter is unavailable, the same weights as a Gemm graph built with onnx.helper."""
    import warnings

    import torch

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, n_in),),
                buf,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        return buf.getvalue()
    except Exception:
        return onnx_gemm_bytes(model.weight.detach().numpy(), model.bias.detach().numpy())


def onnx_gemm_bytes(weight: Any, bias: Any) -> bytes:
    """``output = input @ weight.T + bias`` as an ONNX graph (input ``[batch, n_in]`` float)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_out, n_in = weight.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["output"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_out])],
        [
            numpy_helper.from_array(np.asarray(weight, np.float32), "W"),
            numpy_helper.from_array(np.asarray(bias, np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
