"""What a processing job's ``AppSpecification`` runs here: the model-monitor analyzer image runs
modelhost's analyzer; framework images (scikit-learn, XGBoost, PyTorch, TensorFlow, Hugging Face,
MXNet) run their ``python`` entrypoint with this machine's interpreter; anything else is refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANALYZER = "sagemaker-model-monitor-analyzer"
FRAMEWORKS = re.compile(
    r"(^|/)(sagemaker-scikit-learn|sagemaker-xgboost|pytorch-(training|inference)|tensorflow-(training|inference)"
    r"|huggingface-[a-z0-9-]+|mxnet-(training|inference)|sagemaker-[a-z-]*processing)(:|@|$)"
)
PYTHONS = ("python", "python3")


class UnsupportedImage(Exception):
    """The job cannot run here; the message is its FailureReason."""


@dataclass(frozen=True)
class Program:
    argv: list[str]  # with "python" still symbolic: the runner puts the interpreter in
    analyzer: bool


def repository(image: str) -> str:
    path = image.split("/", 1)[1] if "/" in image else image
    return re.split(r"[:@]", path, maxsplit=1)[0]


def program(app: dict[str, Any]) -> Program:
    image = app["ImageUri"]
    entry = list(app.get("ContainerEntrypoint") or [])
    args = list(app.get("ContainerArguments") or [])
    if repository(image) == ANALYZER or repository(image).endswith("/" + ANALYZER):
        return Program(["python", "-m", "modelhost.monitor", *args], analyzer=True)
    if FRAMEWORKS.search(image.split("/", 1)[-1]):
        if not entry:
            raise UnsupportedImage(
                f"ClientError: the image {image} needs AppSpecification.ContainerEntrypoint (for example "
                '["python3", "/opt/ml/processing/input/code/script.py"]): modelhost runs framework images\' '
                "scripts with python."
            )
        if entry[0].rsplit("/", 1)[-1] not in PYTHONS:
            raise UnsupportedImage(
                f"ClientError: modelhost runs the entrypoint of {image} only with python; got {entry[0]}."
            )
        return Program(["python", *entry[1:], *args], analyzer=False)
    raise UnsupportedImage(
        f"ClientError: The image {image} is not supported by modelhost: processing jobs run the model-monitor "
        f"analyzer image ({ANALYZER}) or a framework image (scikit-learn, XGBoost, PyTorch, TensorFlow, "
        "Hugging Face, MXNet) with a python entrypoint."
    )
