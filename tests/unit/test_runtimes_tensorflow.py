"""TensorFlow runtime: a clear load failure without TensorFlow; a minimal SavedModel runtime with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from modelhost.serving.errors import ModelLoadError
from modelhost.serving.handler import Handler
from modelhost.serving.runtimes import get_runtime

HAS_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.mark.skipif(HAS_TF, reason="tensorflow is installed")
def test_without_tensorflow_the_reason_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        get_runtime("tensorflow")
    assert info.value.reason.startswith("TensorFlow Serving images need TensorFlow, which is not installed")
    with pytest.raises(ModelLoadError) as info:
        Handler(tmp_path, "tensorflow")
    assert info.value.reason.startswith("TensorFlow Serving images need TensorFlow, which is not installed")


@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_saved_model(tmp_path: Path) -> None:  # pragma: no cover - only where TensorFlow is installed
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable([[1.0], [2.0], [3.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w)}

    model = Model()
    tf.saved_model.save(model, str(tmp_path / "1"), signatures={"serving_default": model.__call__})
    rt = get_runtime("tensorflow")
    loaded = rt.model_fn(str(tmp_path))
    body, _ = rt.output_fn(
        rt.predict_fn(rt.input_fn('{"instances": [[1, 1, 1]]}', "application/json"), loaded), "application/json"
    )
    assert json.loads(body) == {"predictions": [[6.0]]}
    body, _ = rt.output_fn(
        rt.predict_fn(rt.input_fn('{"inputs": [[0, 0, 1]]}', "application/json"), loaded), "application/json"
    )
    assert json.loads(body) == {"outputs": [[3.0]]}
