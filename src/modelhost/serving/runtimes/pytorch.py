"""The PyTorch runtime (``pytorch-inference`` DLC; sagemaker-pytorch-inference-toolkit defaults).

Without a user ``model_fn`` the model is TorchScript: ``model.pt``, else the one ``*.pt``/``*.pth`` file in the
model dir, loaded with ``torch.jit.load`` (as the toolkit's ``default_model_fn``; its error wording). As an
addition, a lone ``*.pt2`` file (``torch.export.save``) is loaded with ``torch.export.load``.

Requests: JSON/CSV become a float32 tensor, NPY keeps its dtype (``torch.from_numpy``), NPZ arrays likewise;
prediction runs under ``torch.no_grad()`` in eval mode; tensors (also inside tuples/lists/dicts) come back as
JSON, CSV or NPY.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelhost.serving import codecs
from modelhost.serving.batch_predict import offsets, run_batched
from modelhost.serving.errors import BadRequest
from modelhost.serving.runtimes import Runtime

DEFAULT_MODEL_FILENAME = "model.pt"
MODEL_SUFFIXES = (".pt", ".pth")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model_path(model_dir: str) -> Path:
    base = Path(model_dir)
    path = base / DEFAULT_MODEL_FILENAME
    if path.is_file():
        return path
    files = sorted(p.name for p in base.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if len(files) == 1:
        return base / files[0]
    exported = sorted(p.name for p in base.iterdir() if p.is_file() and p.suffix == ".pt2")
    if not files and len(exported) == 1:
        return base / exported[0]
    raise ValueError(f"Exactly one .pth or .pt file is required for PyTorch models: {files}")


def model_fn(model_dir: str) -> Any:
    path = _model_path(model_dir)
    device = _device()
    if path.suffix == ".pt2":
        program = torch.export.load(str(path))
        return program.module().to(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of export
            model = torch.jit.load(str(path), map_location=device)
    except RuntimeError as e:
        raise RuntimeError(f"Failed to load {path}. Please ensure model is saved using torchscript.") from e
    model.eval()
    return model.to(device)


def _to_tensor(value: Any, content_type: str) -> Any:
    if isinstance(value, dict):
        return {k: _to_tensor(v, content_type) for k, v in value.items()}
    if not isinstance(value, np.ndarray):
        return value  # e.g. a scipy sparse matrix: the user's predict_fn decides
    try:
        if codecs.media_type(content_type) in codecs.UTF8_TYPES:
            return torch.from_numpy(np.asarray(value, dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(value))
    except (TypeError, ValueError) as e:
        raise BadRequest(f"Failed to convert the {content_type} body to a tensor: {e}") from e


def input_fn(data: Any, content_type: str) -> Any:
    """JSON/CSV -> float32 tensor (as ``torch.FloatTensor``), NPY/NPZ -> ``torch.from_numpy``; on the model's device."""
    tensor = _to_tensor(codecs.decode(data, content_type), content_type)
    if isinstance(tensor, torch.Tensor):
        return tensor.to(_device())
    return tensor


def predict_fn(data: Any, model: Any) -> Any:
    with torch.no_grad():
        if isinstance(model, torch.nn.Module) and model.training:
            with contextlib.suppress(NotImplementedError):  # torch.export modules refuse eval()
                model.eval()
        if isinstance(data, torch.Tensor):
            return model(data)
        if isinstance(data, dict):
            return model(**data)
        return model(data)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_numpy(v) for v in value]
    return value


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode(_to_numpy(prediction), accept)


def _batch_key(data: Any) -> Any:
    """Tensors (or dicts of them, one per model argument) group by trailing shape, dtype and device."""
    if isinstance(data, torch.Tensor):
        return ("t", tuple(data.shape[1:]), str(data.dtype), str(data.device)) if data.ndim >= 2 else None
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) and v.ndim >= 1 for v in data.values()):
        rows = {v.shape[0] for v in data.values()}
        if len(rows) != 1:
            return None
        return ("d", tuple((k, tuple(v.shape[1:]), str(v.dtype), str(v.device)) for k, v in sorted(data.items())))
    return None


def _combine(parts: list[Any]) -> tuple[Any, list[int]]:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts), [p.shape[0] for p in parts]
    sizes = [next(iter(p.values())).shape[0] for p in parts]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, sizes


def _split(prediction: Any, sizes: list[int]) -> list[Any] | None:
    """Per-input parts of a tensor, or of a tuple/list/dict of tensors, split along the first dimension."""
    total = sum(sizes)
    if isinstance(prediction, torch.Tensor):
        if prediction.ndim == 0 or prediction.shape[0] != total:
            return None
        return [prediction[a:b] for a, b in offsets(sizes)]
    if isinstance(prediction, dict):
        split = {k: _split(v, sizes) for k, v in prediction.items()}
        if any(v is None for v in split.values()):
            return None
        return [{k: v[i] for k, v in split.items() if v is not None} for i in range(len(sizes))]
    if isinstance(prediction, list | tuple) and prediction:
        items = [_split(v, sizes) for v in prediction]
        if any(v is None for v in items):
            return None
        return [type(prediction)(v[i] for v in items if v is not None) for i in range(len(sizes))]
    return None


def predict_batch(datas: list[Any], model: Any) -> list[Any]:
    return run_batched(datas, model, predict_fn, _batch_key, _combine, _split)


RUNTIME = Runtime(
    name="pytorch",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    predict_batch=predict_batch,
)
