"""Handler chain resolution, context passing and the sklearn/xgboost/python runtime defaults."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from modelhost.serving.errors import BadRequest, ModelLoadError, UnsupportedAccept, UnsupportedContentType
from modelhost.serving.handler import Handler, code_dir


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x[:100], y[:100]


def write_code(model_dir: Path, source: str, name: str = "inference.py") -> None:
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / name).write_text(textwrap.dedent(source))


def test_sklearn_default_model_fn_joblib(tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = diabetes
    model = LinearRegression().fit(x, y)
    joblib.dump(model, tmp_path / "model.joblib")
    h = Handler(tmp_path, "sklearn")
    csv = "\n".join(",".join(str(v) for v in row) for row in x[:3])
    body, ct, attrs = h.invoke(csv.encode(), "text/csv", "application/json")
    assert ct == "application/json" and attrs is None
    np.testing.assert_allclose(json.loads(body), model.predict(x[:3]))
    body, ct, _ = h.invoke(json.dumps(x[:2].tolist()).encode(), None, "*/*")  # JSON is the default both ways
    assert ct == "application/json"
    np.testing.assert_allclose(json.loads(body), model.predict(x[:2]))
    body, ct, _ = h.invoke(csv.encode(), "text/csv", "text/csv")
    assert ct == "text/csv"
    np.testing.assert_allclose([float(v) for v in body.decode().split()], model.predict(x[:3]))


def test_sklearn_pickle_and_missing_model(tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = diabetes
    with pytest.raises(ModelLoadError) as exc:
        Handler(tmp_path, "sklearn")
    assert exc.value.reason == (
        f"Failed to load model: FileNotFoundError: no model.joblib, model.pkl or model.pickle in {tmp_path}"
    )
    model = LinearRegression().fit(x, y)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    h = Handler(tmp_path, "sklearn")
    assert h.model.coef_.tolist() == model.coef_.tolist()


def test_request_errors_map_to_status(tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    joblib.dump(LinearRegression().fit(*diabetes), tmp_path / "model.joblib")
    h = Handler(tmp_path, "sklearn")
    with pytest.raises(BadRequest, match="text/csv"):
        h.invoke(b"1,x", "text/csv", "application/json")
    with pytest.raises(UnsupportedContentType):
        h.invoke(b"\x89PNG", "image/png", "application/json")
    with pytest.raises(UnsupportedAccept):
        h.invoke(b"[[" + b",".join([b"0"] * 10) + b"]]", "application/json", "image/png")


@pytest.mark.filterwarnings("ignore:.*UBJSON format as default")
def test_xgboost_booster_and_sklearn_api(tmp_path: Path, diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    import xgboost as xgb

    x, y = diabetes
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=y), num_boost_round=5)
    booster_dir = tmp_path / "booster"
    booster_dir.mkdir()
    booster.save_model(str(booster_dir / "xgboost-model"))  # native format: pickle fails, load_model works
    h = Handler(booster_dir, "xgboost")
    assert isinstance(h.model, xgb.Booster)
    expected = booster.predict(xgb.DMatrix(x[:3]))
    csv = "\n".join(",".join(str(v) for v in row) for row in x[:3])
    body, ct, _ = h.invoke(csv.encode(), "text/csv", None)  # algorithm mode answers CSV by default
    assert ct == "text/csv"
    np.testing.assert_allclose([float(v) for v in body.decode().split(",")], expected, rtol=1e-6)
    body, ct, _ = h.invoke(json.dumps(x[0].tolist()).encode(), "application/json", "application/json")
    np.testing.assert_allclose(json.loads(body), expected[:1], rtol=1e-6)

    libsvm = " ".join(f"{i}:{v}" for i, v in enumerate(x[0]))
    body, _, _ = h.invoke(libsvm.encode(), "text/libsvm", "application/json")
    np.testing.assert_allclose(json.loads(body), expected[:1], rtol=1e-6)

    reg = xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(x, y)
    api_dir = tmp_path / "api"
    api_dir.mkdir()
    (api_dir / "xgboost-model").write_bytes(pickle.dumps(reg))
    h = Handler(api_dir, "xgboost")
    body, _, _ = h.invoke(csv.encode(), "text/csv", "application/json")
    np.testing.assert_allclose(json.loads(body), reg.predict(x[:3]), rtol=1e-6)

    ubj_dir = tmp_path / "ubj"
    ubj_dir.mkdir()
    booster.save_model(str(ubj_dir / "model.ubj"))
    np.testing.assert_allclose(Handler(ubj_dir, "xgboost").model.predict(xgb.DMatrix(x[:3])), expected)


def test_user_functions_with_context(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        import helper  # sibling module: the code dir is on sys.path

        def model_fn(model_dir, context):
            return {"scale": helper.SCALE, "dir": context.system_properties["model_dir"]}

        def input_fn(data, content_type, context):
            assert isinstance(data, str)  # JSON arrives decoded
            return [float(v) for v in data.split(",")] if content_type == "text/csv" else eval(data)

        def predict_fn(data, model):
            return [v * model["scale"] for v in data]

        def output_fn(prediction, accept, context):
            context.response_custom_attributes = "echo=" + (context.custom_attributes or "")
            return ",".join(str(v) for v in prediction), "text/x-custom"
    """,
    )
    (tmp_path / "code" / "helper.py").write_text("SCALE = 3\n")
    h = Handler(tmp_path, "python")
    assert h.model == {"scale": 3, "dir": str(tmp_path)}
    out = h.invoke(b"1,2", "text/csv", "application/json", custom_attributes="a=1", inference_id="id-7")
    assert out == (b"3.0,6.0", "text/x-custom", "echo=a=1")


def test_transform_fn_gets_raw_bytes_and_context(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            return "m"

        def transform_fn(model, data, content_type, accept, context):
            return f"{model}|{data!r}|{content_type}|{accept}|{context.inference_id}"
    """,
    )
    h = Handler(tmp_path, "python")
    body, ct, _ = h.invoke(b"\x00\x01", "application/octet-stream", "*/*", inference_id="i1")
    assert body == b"m|b'\\x00\\x01'|application/octet-stream|application/json|i1"
    assert ct == "application/json"  # no content type returned: the accept type


def test_transform_fn_conflict(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir): return 1
        def input_fn(data, content_type): return data
        def transform_fn(model, data, content_type, accept): return data
    """,
    )
    with pytest.raises(ModelLoadError) as exc:
        Handler(tmp_path, "python")
    assert exc.value.reason == ("transform_fn cannot be defined together with input_fn, predict_fn or output_fn")


def test_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError) as exc:
        Handler(tmp_path, "python")
    assert exc.value.reason == "the python runtime needs code/inference.py with model_fn"
    with pytest.raises(ModelLoadError, match="Unsupported runtime 'mxnet'"):
        Handler(tmp_path, "mxnet")
    write_code(tmp_path, "def model_fn(model_dir):\n    raise ValueError('boom')\n")
    with pytest.raises(ModelLoadError) as exc:
        Handler(tmp_path, "python")
    assert exc.value.reason == "model_fn raised ValueError: boom"
    write_code(tmp_path, "import no_such_module_xyz\n", name="broken.py")
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "broken.py")
    with pytest.raises(ModelLoadError, match="Failed to import user code .*broken.py: ModuleNotFoundError"):
        Handler(tmp_path, "python")
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "absent.py")
    with pytest.raises(ModelLoadError, match="'absent.py' not found"):
        Handler(tmp_path, "python")


def test_generic_default_predict_and_program_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_code(tmp_path, "def model_fn(model_dir):\n    return lambda x: x * 2\n", name="serve.py")
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "serve.py")
    monkeypatch.setenv("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/model/code")
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
    h = Handler(tmp_path, "python")
    assert h.invoke(b"[[1, 2]]", "application/json", None) == (b"2,4\n", "text/csv", None)


def test_code_dir_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert code_dir(tmp_path) == tmp_path / "code"
    monkeypatch.setenv("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/model/code")
    assert code_dir(tmp_path) == tmp_path / "code"
    monkeypatch.setenv("SAGEMAKER_SUBMIT_DIRECTORY", "s3://bucket/sourcedir.tar.gz")
    assert code_dir(tmp_path) == tmp_path / "code"
    monkeypatch.setenv("SAGEMAKER_SUBMIT_DIRECTORY", f"file://{tmp_path}/src")
    assert code_dir(tmp_path) == tmp_path / "src"


def test_bad_signature_is_load_error(tmp_path: Path) -> None:
    write_code(tmp_path, "def model_fn(d): return 1\ndef predict_fn(data): return data\n")
    with pytest.raises(ModelLoadError, match="predict_fn must take 2 positional arguments"):
        Handler(tmp_path, "python")
