"""The XGBoost runtime (sagemaker-xgboost image, algorithm-mode defaults).

Loads ``xgboost-model`` (pickle first, then the native format) or a ``*.ubj``/``*.json``/``*.bst`` Booster
file; Boosters predict on a DMatrix, sklearn-API models via ``.predict``. Like the XGBoost container, CSV
output of 1-D predictions is one comma-separated line and the default Accept is text/csv.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from modelhost.serving import codecs
from modelhost.serving.batch_predict import array_batch
from modelhost.serving.errors import BadRequest
from modelhost.serving.runtimes import Runtime

LIBSVM_TYPES = ("text/libsvm", "text/x-libsvm")
BOOSTER_SUFFIXES = (".ubj", ".json", ".bst", ".model")


def _load_booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    with warnings.catch_warnings():
        # ``xgboost-model`` has no extension by convention; xgboost warns that it guesses UBJSON.
        warnings.filterwarnings("ignore", message=".*Unknown file format", category=UserWarning)
        booster.load_model(str(path))
    return booster


def model_fn(model_dir: str) -> Any:
    base = Path(model_dir)
    default = base / "xgboost-model"
    if default.is_file():
        try:
            with default.open("rb") as f:
                model = pickle.load(f)
        except Exception as pickle_error:  # not a pickle: the native format
            try:
                model = _load_booster(default)
            except xgb.core.XGBoostError as e:
                raise ValueError(f"{default} is neither a pickle ({pickle_error}) nor an XGBoost model ({e})") from e
    else:
        candidates = sorted(p for p in base.iterdir() if p.is_file() and p.suffix in BOOSTER_SUFFIXES)
        if not candidates:
            raise FileNotFoundError(f"no xgboost-model or *.ubj, *.json, *.bst file in {model_dir}")
        model = _load_booster(candidates[0])
    if isinstance(model, xgb.Booster):
        # As the XGBoost container: one thread per predict; tiny requests lose more to OpenMP start-up.
        model.set_param("nthread", "1")
    return model


def decode_libsvm(data: str | bytes) -> Any:
    import scipy.sparse  # xgboost depends on scipy

    text = data.decode("utf-8") if isinstance(data, bytes) else data
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    n = 0
    for lineno, line in enumerate(text.strip().splitlines(), 1):
        items = line.split()
        if items and ":" not in items[0]:
            items = items[1:]  # a leading label
        for item in items:
            try:
                col, val = item.split(":", 1)
                cols.append(int(col))
                vals.append(float(val))
            except ValueError:
                raise BadRequest(f"Failed to decode text/libsvm body: line {lineno}: bad item {item!r}") from None
            rows.append(n)
        n += 1
    width = max(cols) + 1 if cols else 0
    return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n, width))


DECODERS: dict[str, codecs.Decoder] = {**codecs.DECODERS, **{t: decode_libsvm for t in LIBSVM_TYPES}}


def encode_csv(obj: Any) -> bytes:
    arr = np.asarray(obj)
    if arr.ndim == 1:
        return ",".join(map(str, arr.tolist())).encode("utf-8")
    return codecs.encode_csv(arr)


ENCODERS: dict[str, codecs.Encoder] = {**codecs.ENCODERS, codecs.CSV: encode_csv}


def input_fn(data: Any, content_type: str) -> Any:
    return codecs.decode(data, content_type, DECODERS)


def predict_fn(data: Any, model: Any) -> Any:
    if not isinstance(model, xgb.Booster):
        return model.predict(data)
    if not isinstance(data, xgb.DMatrix):
        if isinstance(data, np.ndarray) and data.ndim == 1:
            data = data.reshape(1, -1)  # a single row
        data = xgb.DMatrix(data)
    return model.predict(data, validate_features=False)


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode(prediction, accept, ENCODERS)


RUNTIME = Runtime(
    name="xgboost",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    default_accept=codecs.CSV,
    predict_batch=array_batch(predict_fn, rows_1d=True),
)
