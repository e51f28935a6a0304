"""Image URI -> runtime for every DLC family (PyTorch, TensorFlow, Hugging Face, ONNX, spaCy) and the
reasons for images modelhost does not run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from modelhost.serving.images import (
    AWS_REPOSITORIES,
    MODELHOST_IMAGES,
    UNSUPPORTED_REPOSITORIES,
    detect_runtime,
    runtime_for_image,
    unsupported_image_reason,
)
from modelhost.serving.runtimes import RUNTIME_MODULES

DLC = "763104351884.dkr.ecr.{region}.amazonaws.com/{repo}:{tag}"


@pytest.mark.parametrize(
    ("repo", "tag", "runtime"),
    [
        # The four families of the Hugging Face DLC reference (seed 004), both example URIs included.
        ("huggingface-pytorch-inference", "1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04", "huggingface"),
        ("huggingface-pytorch-training", "1.6.0-transformers4.4.2-gpu-py36-cu110-ubuntu18.04", "huggingface"),
        ("huggingface-tensorflow-inference", "2.4.1-transformers4.6.1-cpu-py37-ubuntu18.04", "huggingface"),
        ("huggingface-tensorflow-training", "2.6.3-transformers4.17.0-gpu-py38-cu112-ubuntu20.04", "huggingface"),
        # PyTorch
        ("pytorch-inference", "2.1.0-cpu-py310", "pytorch"),
        ("pytorch-inference", "1.6.0-gpu-py36-cu101-ubuntu16.04", "pytorch"),
        ("pytorch-inference-graviton", "2.0.1-cpu-py310-ubuntu20.04-ec2", "pytorch"),
        ("pytorch-inference-eia", "1.5.1-cpu-py36-ubuntu16.04", "pytorch"),
        ("sagemaker-pytorch", "1.0.0-cpu-py3", "pytorch"),
        ("pytorch-serving", "1.2.0-cpu-py3", "pytorch"),
        ("sagemaker-pytorch-serving", "1.1.0-cpu-py3", "pytorch"),
        ("pytorch-training", "2.1.0-cpu-py310", "pytorch"),
        # TensorFlow (Serving)
        ("tensorflow-inference", "2.3.2-cpu-py37-ubuntu18.04", "tensorflow"),
        ("tensorflow-inference-graviton", "2.9.1-cpu-py38-ubuntu20.04-sagemaker", "tensorflow"),
        ("sagemaker-tensorflow-serving", "1.15.0-cpu", "tensorflow"),
        ("sagemaker-tensorflow-serving-eia", "1.14-cpu", "tensorflow"),
        ("tensorflow-training", "2.13.0-cpu-py310", "tensorflow"),
        # ONNX repository names modelhost takes
        ("onnx-inference", "1.17", "onnx"),
        ("onnxruntime-inference", "latest", "onnx"),
        ("sagemaker-onnx", "1", "onnx"),
    ],
)
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1"])
def test_dlc_families(repo: str, tag: str, runtime: str, region: str) -> None:
    assert runtime_for_image(DLC.format(region=region, repo=repo, tag=tag)) == runtime
    assert runtime_for_image(f"{repo}:{tag}") == runtime  # a local copy of the image


@pytest.mark.parametrize(
    ("image", "runtime"),
    [
        ("modelhost/pytorch", "pytorch"),
        ("modelhost/onnx:latest", "onnx"),
        ("localhost:5000/modelhost/onnx:1", "onnx"),
        ("modelhost/spacy:3.8", "spacy"),
        ("modelhost/tensorflow", "tensorflow"),
        ("modelhost/huggingface", "huggingface"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310", None),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-tei:2.0-tei1.2-gpu-py310-cu122", None),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-tei-cpu:2.0-tei1.2-cpu-py310", None),
        ("763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference-neuronx:1.13.1-neuronx-py310", None),
        ("onnx", None),
        ("pytorch/pytorch:latest", None),
    ],
)
def test_other_images(image: str, runtime: str | None) -> None:
    assert runtime_for_image(image) == runtime


def test_every_mapped_runtime_exists() -> None:
    for runtime in {*AWS_REPOSITORIES.values(), *MODELHOST_IMAGES.values()}:
        if runtime == "lambda":  # not a model runtime: the worker hands the process to serving/lambda_runtime.py
            assert importlib.import_module("modelhost.serving.lambda_runtime").main
            continue
        assert runtime in RUNTIME_MODULES, runtime


def test_unsupported_reasons() -> None:
    tgi = unsupported_image_reason(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310"
    )
    assert "not supported by modelhost" in tgi and "TGI" in tgi and "huggingface-pytorch-inference" in tgi
    assert "TEI" in unsupported_image_reason("huggingface-tei-cpu:1")
    assert "Inferentia" in unsupported_image_reason("pytorch-inference-neuronx:1")
    generic = unsupported_image_reason("nginx:latest")
    assert "'nginx:latest' is not supported" in generic
    assert "pytorch-inference" in generic and "modelhost/onnx" in generic and "-training" not in generic
    for name in UNSUPPORTED_REPOSITORIES:
        assert runtime_for_image(f"{name}:1") is None


def test_detect_runtime_new_formats(tmp_path: Path) -> None:
    cases = {
        "onnx": ["model.onnx"],
        "pytorch": ["model.pt"],
        "spacy": ["config.cfg", "meta.json"],
        "tensorflow": ["saved_model.pb"],
    }
    for runtime, files in cases.items():
        d = tmp_path / runtime
        d.mkdir()
        for f in files:
            (d / f).write_bytes(b"")
        assert detect_runtime(d) == runtime
