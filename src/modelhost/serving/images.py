"""Which serving runtime an image URI (or a model directory) stands for."""

from __future__ import annotations

from pathlib import Path

# Repository name (last path component, no tag) of AWS images, in any registry/region/version -> runtime.
AWS_REPOSITORIES: dict[str, str] = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "huggingface-pytorch-inference": "huggingface",
}
# The old 1P algorithm repository names are generic words, so they only count on an ECR registry.
AWS_ALGORITHM_REPOSITORIES: dict[str, str] = {
    "xgboost": "xgboost",
}
# Our own images, ``modelhost/<runtime>[:tag]`` (optionally behind a registry host).
MODELHOST_IMAGES: dict[str, str] = {
    "modelhost/sklearn": "sklearn",
    "modelhost/xgboost": "xgboost",
    "modelhost/python": "python",
    "modelhost/huggingface": "huggingface",
    "modelhost/lambda": "lambda",  # Lambda functions (serving/lambda_runtime.py), made by the Lambda API
}


# PyTorch, TensorFlow, ONNX and spaCy (issue 3). Training images of a family map to the family's runtime: SageMaker
# could not serve them, modelhost does (a deliberate widening, so every DLC family has a runtime).
AWS_REPOSITORIES.update(
    {
        # PyTorch DLCs (sagemaker-pytorch-inference-toolkit); sagemaker-pytorch/-serving are the pre-1.2 names.
        "pytorch-inference": "pytorch",
        "pytorch-inference-graviton": "pytorch",
        "pytorch-inference-arm64": "pytorch",
        "pytorch-inference-eia": "pytorch",
        "sagemaker-pytorch": "pytorch",
        "sagemaker-pytorch-serving": "pytorch",
        "pytorch-serving": "pytorch",
        "pytorch-training": "pytorch",
        "huggingface-pytorch-training": "huggingface",
        # TensorFlow Serving DLCs: need TensorFlow, see runtimes/tensorflow.py.
        "tensorflow-inference": "tensorflow",
        "tensorflow-inference-graviton": "tensorflow",
        "tensorflow-inference-arm64": "tensorflow",
        "tensorflow-inference-eia": "tensorflow",
        "sagemaker-tensorflow-serving": "tensorflow",
        "sagemaker-tensorflow-serving-eia": "tensorflow",
        "sagemaker-tensorflow": "tensorflow",
        "tensorflow-training": "tensorflow",
        # The Hugging Face TensorFlow DLCs run the HF inference toolkit (HF_TASK, inference.py) over
        # TensorFlow pipelines, not TF Serving: the same contract here, on transformers 5 (no TensorFlow in it),
        # so from PyTorch/safetensors weights; a tf_model.h5-only model fails naming the file.
        "huggingface-tensorflow-inference": "huggingface",
        "huggingface-tensorflow-training": "huggingface",
        # ONNX: there is no AWS ONNX DLC; these are the repository names modelhost takes for an ONNX Runtime image.
        "onnx-inference": "onnx",
        "onnxruntime-inference": "onnx",
        "sagemaker-onnx": "onnx",
        "sagemaker-onnxruntime": "onnx",
    }
)
MODELHOST_IMAGES.update(
    {
        "modelhost/pytorch": "pytorch",
        "modelhost/tensorflow": "tensorflow",
        "modelhost/onnx": "onnx",
        "modelhost/spacy": "spacy",
    }
)

_TGI = (
    "Hugging Face TGI (text-generation-inference) images run their own LLM server (GPU, /generate API); modelhost "
    "cannot run them. Serve the model with huggingface-pytorch-inference and HF_TASK=text-generation instead."
)
_TEI = (
    "Hugging Face TEI (text-embeddings-inference) images run their own embedding server; modelhost cannot run "
    "them. Serve the model with huggingface-pytorch-inference and HF_TASK=feature-extraction instead."
)
_NEURON = "AWS Neuron images need AWS Inferentia/Trainium hardware; modelhost runs CPU images only."
# Repository names of known images modelhost deliberately does not run -> the FailureReason detail.
UNSUPPORTED_REPOSITORIES: dict[str, str] = {
    "huggingface-pytorch-tgi-inference": _TGI,
    "huggingface-text-generation-inference": _TGI,
    "text-generation-inference": _TGI,
    "huggingface-tei": _TEI,
    "huggingface-tei-cpu": _TEI,
    "text-embeddings-inference": _TEI,
    "pytorch-inference-neuron": _NEURON,
    "pytorch-inference-neuronx": _NEURON,
    "huggingface-pytorch-inference-neuron": _NEURON,
    "huggingface-pytorch-inference-neuronx": _NEURON,
    "huggingface-pytorch-tgi-inference-neuronx": _NEURON,
    "djl-inference": "DJL Serving / LMI images (djl-inference) are not supported by modelhost.",
    "tritonserver": "NVIDIA Triton images are not supported by modelhost.",
    "sagemaker-tritonserver": "NVIDIA Triton images are not supported by modelhost.",
    "mxnet-inference": "Apache MXNet images are not supported by modelhost (MXNet is retired).",
    "sagemaker-mxnet": "Apache MXNet images are not supported by modelhost (MXNet is retired).",
    "sagemaker-mxnet-serving": "Apache MXNet images are not supported by modelhost (MXNet is retired).",
}


def unsupported_image_reason(image: str) -> str:
    """Why modelhost cannot run ``image`` (a FailureReason detail for when runtime_for_image returns None)."""
    _, repo = _split(image)
    name = repo.rsplit("/", 1)[-1]
    detail = UNSUPPORTED_REPOSITORIES.get(name)
    if detail is None:
        families = ", ".join(sorted({r for r in AWS_REPOSITORIES if not r.endswith("-training")}))
        detail = (
            f"Supported images: the SageMaker framework images {families} (any account, region and version) "
            f"and {', '.join(sorted(MODELHOST_IMAGES))}."
        )
    return f"image {image!r} is not supported by modelhost. {detail}"


def _split(image: str) -> tuple[str, str]:
    """``host/a/b:tag@sha256:..`` -> (registry host or "", repository path without tag/digest)."""
    ref = image.strip().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first.lower(), rest.lower()
    return "", ref.lower()


def runtime_for_image(image: str) -> str | None:
    """The runtime name for an image URI, or None when modelhost cannot run that image."""
    host, repo = _split(image)
    if not repo:
        return None
    if repo in MODELHOST_IMAGES:
        return MODELHOST_IMAGES[repo]
    name = repo.rsplit("/", 1)[-1]
    if name in AWS_REPOSITORIES:
        return AWS_REPOSITORIES[name]
    if ".dkr.ecr." in host and name in AWS_ALGORITHM_REPOSITORIES:
        return AWS_ALGORITHM_REPOSITORIES[name]
    return None


def detect_runtime(model_dir: Path) -> str | None:
    """Guess the runtime from the files of an extracted model artifact."""
    if any((model_dir / n).is_file() for n in ("model.joblib", "model.pkl", "model.pickle")):
        return "sklearn"
    if (model_dir / "xgboost-model").is_file():
        return "xgboost"
    if any(p.suffix in (".ubj", ".bst") for p in model_dir.iterdir()):
        return "xgboost"
    if (model_dir / "config.json").is_file() and any(
        any(model_dir.glob(p)) for p in ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
    ):
        return "huggingface"
    if any(p.suffix == ".onnx" for p in model_dir.iterdir()):
        return "onnx"
    if any(p.suffix in (".pt", ".pth", ".pt2") for p in model_dir.iterdir()):
        return "pytorch"
    if (model_dir / "config.cfg").is_file() and (model_dir / "meta.json").is_file():
        return "spacy"
    if (model_dir / "saved_model.pb").is_file():
        return "tensorflow"
    if (model_dir / "code" / "inference.py").is_file():
        return "python"
    return None
