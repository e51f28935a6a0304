"""The scikit-learn runtime (sagemaker-scikit-learn image): joblib/pickle model file, ``model.predict``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from modelhost.serving.batch_predict import array_batch
from modelhost.serving.runtimes import Runtime
from modelhost.serving.runtimes.generic import input_fn, output_fn

MODEL_FILES = ("model.joblib", "model.pkl", "model.pickle")


def model_fn(model_dir: str) -> Any:
    base = Path(model_dir)
    for name in MODEL_FILES:
        path = base / name
        if path.is_file():
            if name.endswith(".joblib"):
                import joblib

                return joblib.load(path)
            with path.open("rb") as f:
                return pickle.load(f)
    raise FileNotFoundError(f"no {', '.join(MODEL_FILES[:-1])} or {MODEL_FILES[-1]} in {model_dir}")


def predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data)


RUNTIME = Runtime(
    name="sklearn",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    predict_batch=array_batch(predict_fn),
)
