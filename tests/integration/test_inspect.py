"""modelhost inspect on each framework's artifact (a model.tar.gz): the runtime is recognised from the
files, the handler functions of code/inference.py are listed, and the printed loading snippet loads
the model (all snippets run in one fresh interpreter, outside modelhost)."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelhost.cli import app
from tests import hf_models
from tests.helpers import diabetes, sklearn_model, tarball
from tests.runtime_artifacts import onnx_bytes, tiny_linear, torchscript_bytes

HANDLER_CODE = (
    "def model_fn(model_dir):\n    return {'dir': model_dir}\n\ndef predict_fn(data, model):\n    return data\n"
)
runner = CliRunner()


def _xgboost(pickled: bool) -> dict[str, bytes]:
    import xgboost as xgb

    x, y = diabetes()
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=y), num_boost_round=3)
    if pickled:  # the built-in algorithm's artifact: a pickled Booster
        return {"xgboost-model": pickle.dumps(booster)}
    return {"xgboost-model": bytes(booster.save_raw("ubj"))}


def _dir(d: Path) -> dict[str, bytes]:
    return hf_models.dir_files(d)


def _spacy(tmp: Path) -> dict[str, bytes]:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp / "spacy")
    return _dir(tmp / "spacy")


def _tensorflow(tmp: Path) -> dict[str, bytes]:
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return 2 * x

    tf.saved_model.save(Double(), str(tmp / "tf" / "1"))  # TensorFlow Serving's <version>/ layout
    return _dir(tmp / "tf")


CASES = {
    # name: (runtime, words of the reason, expected type name of `model`)
    "sklearn": ("sklearn", "model.joblib", "LinearRegression"),
    "xgboost-native": ("xgboost", "xgboost-model", "Booster"),
    "xgboost-pickle": ("xgboost", "xgboost-model", "Booster"),
    "huggingface": ("huggingface", "transformers model", "BertForSequenceClassification"),
    "sentence-transformers": ("huggingface", "sentence-transformers", "SentenceTransformer"),  # a directory
    "torchscript": ("pytorch", "TorchScript", "RecursiveScriptModule"),
    "onnx": ("onnx", "ONNX graph", "InferenceSession"),
    "spacy": ("spacy", "spaCy pipeline", "English"),
    "user-code": ("sklearn", "sagemaker-scikit-learn", "dict"),
    "tensorflow": ("tensorflow", "TensorFlow Serving", "_UserObject"),
}


def _files(name: str, tmp: Path) -> dict[str, bytes]:
    if name == "sklearn":
        return {"model.joblib": _joblib()}
    if name.startswith("xgboost"):
        return _xgboost(pickled=name.endswith("pickle"))
    if name == "huggingface":
        return _dir(hf_models.bert(tmp / "bert", "BertForSequenceClassification"))
    if name == "torchscript":
        return {"model.pt": torchscript_bytes(tiny_linear())}
    if name == "onnx":
        return {"model.onnx": onnx_bytes(tiny_linear())}
    if name == "spacy":
        return _spacy(tmp)
    if name == "user-code":
        return {"model.joblib": _joblib(), "code/inference.py": HANDLER_CODE.encode()}
    return _tensorflow(tmp)


def _joblib() -> bytes:
    import joblib

    _, model = sklearn_model()
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """name -> (the printed report, its snippet), for every framework available here."""
    out = {}
    for name in CASES:
        if name == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
            continue
        tmp = tmp_path_factory.mktemp(name)
        if name == "sentence-transformers":  # a model directory is inspected in place (90 MB: no archive)
            target = str(hf_models.minilm_dir())
        else:
            (tmp / "model.tar.gz").write_bytes(tarball(_files(name, tmp)))
            target = str(tmp / "model.tar.gz")
        result = runner.invoke(app, ["inspect", target, "--extract-to", str(tmp / "x")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        report = result.output
        if name == "user-code":  # the image decides the runtime when the model names one
            report = _inspect_with_image(tmp, tmp / "model.tar.gz")
        out[name] = (report, report.split("load it outside modelhost:\n", 1)[1])
    return out


def _inspect_with_image(tmp: Path, archive: Path) -> str:
    """The same as `inspect` of a model whose image is the scikit-learn container (the model-name path,
    without a server: DescribeModel's container as the source)."""
    from modelhost.export.commands import report
    from modelhost.export.fetch import local_dir
    from modelhost.export.inspect import inspect_model

    model_dir = local_dir(archive, tmp)
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

    return report("user-code", model_dir, inspect_model(model_dir, image))


def test_each_framework_is_recognised(inspected: dict[str, tuple[str, str]]) -> None:
    for name, (report, _) in inspected.items():
        runtime, why, _ = CASES[name]
        assert f"runtime: {runtime}\n" in report, (name, report)
        assert why in report.split("why: ", 1)[1].splitlines()[0], (name, report)
        assert "files (" in report


def test_inference_script_handlers_are_listed(inspected: dict[str, tuple[str, str]]) -> None:
    report, snippet = inspected["user-code"]
    assert "code/inference.py defines: model_fn, predict_fn" in report
    assert "inference.model_fn(" in snippet  # the container would call the user's model_fn
    assert "code/inference.py: none" in inspected["sklearn"][0]


def test_printed_snippets_load_the_models(inspected: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    """Each snippet, as printed, in a fresh interpreter that has no modelhost on its path."""
    script = tmp_path / "run_snippets.py"
    snippets = {name: snippet for name, (_, snippet) in inspected.items()}
    script.write_text(
        "import json, sys\n"
        f"snippets = json.loads({json.dumps(json.dumps(snippets))})\n"
        "for name, code in snippets.items():\n"
        "    scope = {}\n"
        "    exec(compile(code, name, 'exec'), scope)\n"
        "    print(name, type(scope['model']).__name__, flush=True)\n"
        "assert 'modelhost' not in sys.modules\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ", 1)[0] in snippets)
    for name in snippets:
        assert loaded.get(name) == CASES[name][2], (name, loaded, done.stderr[-2000:])


def test_inspect_bad_inputs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope.tar.gz"), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "nope.tar.gz" in result.output
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    result = runner.invoke(app, ["inspect", str(tmp_path / "broken.tar.gz")])
    assert result.exit_code == 1 and "is not a readable model.tar.gz" in result.output
    (tmp_path / "empty.tar.gz").write_bytes(tarball({"README": b"nothing to see"}))
    result = runner.invoke(app, ["inspect", str(tmp_path / "empty.tar.gz")])
    assert result.exit_code == 0 and "runtime: unknown" in result.output
