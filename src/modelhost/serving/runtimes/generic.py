"""The ``modelhost/python`` runtime: user code supplies model_fn; generic codecs for the rest."""

from __future__ import annotations

from typing import Any

from modelhost.serving import codecs
from modelhost.serving.runtimes import Runtime


def input_fn(data: Any, content_type: str) -> Any:
    return codecs.decode(data, content_type)


def predict_fn(data: Any, model: Any) -> Any:
    if callable(model):
        return model(data)
    return model.predict(data)


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode(prediction, accept)


RUNTIME = Runtime(name="python", model_fn=None, input_fn=input_fn, predict_fn=predict_fn, output_fn=output_fn)
