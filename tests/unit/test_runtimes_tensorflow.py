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


TFS_HANDLERS = """
import json

def input_handler(data, context):
    assert context.method == "predict" and context.rest_uri.endswith(":predict")
    if context.request_content_type == "application/x-numbers":
        numbers = [float(v) for v in data.read().decode().split()]
        return json.dumps({"instances": [numbers]})
    return data.read().decode()

def output_handler(response, context):
    if response.status_code != 200:
        raise ValueError("tfs said: " + response.content.decode())
    prediction = response.json()["predictions"]
    return json.dumps({"doubled": [[2 * v for v in row] for row in prediction], "model": context.model_name,
                       "version": context.model_version}), "application/json"
"""


def _saved_model(root: Path) -> None:  # pragma: no cover - only where TensorFlow is installed
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable([[1.0], [2.0], [3.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w)}

    model = Model()
    tf.saved_model.save(model, str(root), signatures={"serving_default": model.__call__})


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
def test_tfs_input_and_output_handlers(tmp_path: Path) -> None:  # pragma: no cover - only with TensorFlow
    """code/inference.py as the SageMaker TFS container runs it, over <name>/<version>/ (TFS's layout)."""
    from modelhost.serving.errors import ModelServerError

    _saved_model(tmp_path / "half_plus" / "7")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(TFS_HANDLERS)
    handler = Handler(tmp_path, "tensorflow")
    body, ctype, _ = handler.invoke(b"1 1 1", "application/x-numbers", "application/json")
    assert ctype == "application/json"
    assert json.loads(body) == {"doubled": [[12.0]], "model": "half_plus", "version": "7"}
    body, _, _ = handler.invoke(b'{"instances": [[0, 0, 1]]}', "application/json", "application/json")
    assert json.loads(body)["doubled"] == [[6.0]]
    with pytest.raises(ValueError, match="tfs said: .*instances"):
        handler.invoke(b'{"nothing": 1}', "application/json", "application/json")
    # only output_handler: the container's default input handler (JSON as is, CSV rows as instances)
    (tmp_path / "code" / "inference.py").write_text(
        TFS_HANDLERS.split("def output_handler")[0].replace("def input_handler", "def _unused")
        + "\ndef output_handler"
        + TFS_HANDLERS.split("def output_handler")[1]
    )
    import sys

    sys.modules.pop("inference", None)
    handler = Handler(tmp_path, "tensorflow")
    body, _, _ = handler.invoke(b"1,0,0\n0,1,0\n", "text/csv", "application/json")
    assert json.loads(body)["doubled"] == [[2.0], [4.0]]
    with pytest.raises(ModelServerError) as info:
        handler.invoke(b"x", "application/x-numbers", "application/json")
    assert info.value.status == 415


def test_tfs_handler_alone_is_refused() -> None:
    """handler(data, context) calls TF Serving itself; there is none to call (clear load failure)."""
    import types

    from modelhost.serving.runtimes import tfs_handlers

    user_transform = tfs_handlers.make_user_transform(
        lambda m, r: tfs_handlers.TfsResponse(200, b"{}"), lambda d: ("m", "1")
    )
    module = types.SimpleNamespace(handler=lambda data, context: None)
    with pytest.raises(ModelLoadError, match="input_handler and/or output_handler"):
        user_transform(module)
    assert user_transform(types.SimpleNamespace(model_fn=None)) is None
