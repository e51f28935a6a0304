"""Image URI / model dir -> runtime mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.serving.images import detect_runtime, runtime_for_image


@pytest.mark.parametrize(
    ("image", "runtime"),
    [
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3", "sklearn"),
        ("141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:0.23-1", "sklearn"),
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", "xgboost"),
        ("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.3-1", "xgboost"),
        ("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", "xgboost"),
        ("sagemaker-xgboost@sha256:" + "a" * 64, "xgboost"),
        ("modelhost/sklearn", "sklearn"),
        ("modelhost/xgboost:latest", "xgboost"),
        ("modelhost/python:0.1", "python"),
        ("localhost:5000/modelhost/python:dev", "python"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310", "pytorch"),
        ("xgboost:latest", None),
        ("nginx", None),
        ("", None),
    ],
)
def test_runtime_for_image(image: str, runtime: str | None) -> None:
    assert runtime_for_image(image) == runtime


def test_detect_runtime(tmp_path: Path) -> None:
    assert detect_runtime(tmp_path) is None
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("")
    assert detect_runtime(tmp_path) == "python"
    (tmp_path / "booster.ubj").write_bytes(b"")
    assert detect_runtime(tmp_path) == "xgboost"
    (tmp_path / "model.joblib").write_bytes(b"")
    assert detect_runtime(tmp_path) == "sklearn"
