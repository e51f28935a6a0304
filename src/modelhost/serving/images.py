"""Which serving runtime an image URI (or a model directory) stands for."""

from __future__ import annotations

from pathlib import Path

# Repository name (last path component, no tag) of AWS images, in any registry/region/version -> runtime.
# Later issues add e.g. "huggingface-pytorch-inference": "huggingface", "pytorch-inference": "pytorch".
AWS_REPOSITORIES: dict[str, str] = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
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
}


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
    if (model_dir / "code" / "inference.py").is_file():
        return "python"
    return None
