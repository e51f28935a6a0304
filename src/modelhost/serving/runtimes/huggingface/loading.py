"""Model loading of the SageMaker Hugging Face inference toolkit: HF_MODEL_ID download, task, pipeline.

Order (as the toolkit): ``HF_MODEL_ID`` set -> ``huggingface_hub.snapshot_download`` into the shared Hub cache
and load from there, else the extracted artifact; task = ``HF_TASK``, else inferred from ``config.json``
``architectures[0]``, else ``text-to-image`` for a diffusers ``model_index.json``, else an error listing the
tasks. The pipeline runs on the CPU in float32 (what transformers 4.x, which the DLCs ship, loaded).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Architecture name suffix -> task, checked in this order (the first match wins).
ARCHITECTURES_2_TASK = {
    "TapasForQuestionAnswering": "table-question-answering",
    "ForQuestionAnswering": "question-answering",
    "ForTokenClassification": "token-classification",
    "ForSequenceClassification": "text-classification",
    "ForMultipleChoice": "multiple-choice",
    "ForMaskedLM": "fill-mask",
    "ForCausalLM": "text-generation",
    "ForConditionalGeneration": "text2text-generation",
    "MTModel": "text2text-generation",
    "EncoderDecoderModel": "text2text-generation",
    # model specific, for backward compatibility
    "GPT2LMHeadModel": "text-generation",
    "T5WithLMHeadModel": "text2text-generation",
}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
OTHER_FRAMEWORK_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.onnx", "saved_model.pb")

# Hub files per framework (the toolkit downloads one framework's weights only).
FRAMEWORK_PATTERNS = {
    "pytorch": "pytorch*",
    "tensorflow": "tf*",
    "flax": "flax*",
    "rust": "rust*",
    "onnx": "*onnx*",
    "safetensors": "*safetensors",
    "coreml": "*mlmodel",
    "tflite": "*tflite",
    "savedmodel": "*tar.gz",
    "openvino": "*openvino*",
    "ckpt": "*ckpt",
    "neuronx": "*neuron",
}


def strtobool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("y", "yes", "t", "true", "on", "1"):
        return True
    if v in ("n", "no", "f", "false", "off", "0", ""):
        return False
    raise ValueError(f"invalid truth value {value!r}")


def trust_remote_code() -> bool:
    return strtobool(os.environ.get("HF_TRUST_REMOTE_CODE", "False"))


def default_hf_home() -> str | None:
    """Where instances share downloaded Hub models when the model's environment names no HF_HOME."""
    if os.environ.get("MODELHOST_HF_CACHE"):
        return os.environ["MODELHOST_HF_CACHE"]
    if os.environ.get("MODELHOST_DATA_DIR"):
        return str(Path(os.environ["MODELHOST_DATA_DIR"]) / "hf-cache")
    return None


def configure_hub_cache() -> None:
    """Point huggingface_hub at the shared cache; must run before huggingface_hub is imported."""
    if "HF_HOME" not in os.environ and "HF_HUB_CACHE" not in os.environ:
        home = default_hf_home()
        if home:
            os.environ["HF_HOME"] = home


def _hub_weights_filter(model_id: str, revision: str | None, token: str | None) -> list[str]:
    """ignore_patterns keeping one framework's weights: safetensors when the repo has them, else PyTorch."""
    from huggingface_hub import HfApi

    try:
        files = [s.rfilename for s in (HfApi().model_info(model_id, revision=revision, token=token).siblings or [])]
    except Exception as e:  # listing is an optimisation; the download below reports real errors
        log.warning("could not list %s (%s): downloading every file", model_id, e)
        return []
    framework = "safetensors" if any(f.endswith("safetensors") for f in files) else "pytorch"
    keep = FRAMEWORK_PATTERNS[framework]
    return sorted({p for p in FRAMEWORK_PATTERNS.values() if p != keep})


def download_model(model_id: str, revision: str | None = None, token: str | None = None) -> str:
    """The local snapshot dir of ``model_id``: from the Hub cache when it is there, else downloaded into it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(model_id, revision=revision, token=token, local_files_only=True)
        log.info("HF_MODEL_ID %s found in the Hub cache: %s", model_id, path)
        return str(path)
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            rev = f" at revision {revision}" if revision else ""
            raise ValueError(
                f"HF_MODEL_ID {model_id}{rev} is not in the Hub cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE "
                "is set, so it cannot be downloaded"
            ) from None
    log.info("downloading HF_MODEL_ID %s into %s", model_id, constants.HF_HUB_CACHE)
    ignore = _hub_weights_filter(model_id, revision, token)
    return str(snapshot_download(model_id, revision=revision, token=token, ignore_patterns=ignore or None))


def infer_task_from_model_architecture(model_config_path: str | Path, architecture_index: int = 0) -> str:
    """The task for ``config.json``'s ``architectures[architecture_index]``; sets ``HF_TASK`` as the toolkit does."""
    with open(model_config_path, encoding="utf-8") as f:
        config = json.load(f)
    architectures = config.get("architectures") or [None]
    architecture = architectures[architecture_index] if architecture_index < len(architectures) else None
    task = None
    if architecture:
        task = next((t for suffix, t in ARCHITECTURES_2_TASK.items() if architecture.endswith(suffix)), None)
    if task is None:
        raise ValueError(
            f"Task couldn't be inferenced from {architecture}. Inference Toolkit can only inference tasks from "
            f"architectures ending with {list(ARCHITECTURES_2_TASK)}. Use env `HF_TASK` to define your task."
        )
    os.environ["HF_TASK"] = task
    return task


def supported_tasks() -> list[str]:
    """Every task the runtime can serve (transformers' pipelines, the ones it removed in v5, sentence-*)."""
    from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES

    from modelhost.serving.runtimes.huggingface.compat import COMPAT_TASKS
    from modelhost.serving.runtimes.huggingface.sentence import SENTENCE_TASKS

    tasks = set(SUPPORTED_TASKS) | set(TASK_ALIASES) | set(COMPAT_TASKS) | set(SENTENCE_TASKS)
    tasks.add("translation_xx_to_yy")
    if _diffusers_available():
        tasks.add("text-to-image")
    return sorted(tasks)


def _diffusers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("diffusers") is not None


def validate_task(task: str) -> None:
    from modelhost.serving.runtimes.huggingface.compat import is_compat_task

    if is_compat_task(task):
        return
    valid = supported_tasks()
    if task not in valid:
        hint = " (text-to-image needs the diffusers package, which is not installed)" if task == "text-to-image" else ""
        raise ValueError(f"Unknown HF_TASK {task!r}{hint}; valid tasks: {', '.join(valid)}")


def check_weights(model_dir: str) -> None:
    base = Path(model_dir)
    if any(any(base.glob(p)) for p in WEIGHT_PATTERNS):
        return
    others = [n for n in OTHER_FRAMEWORK_WEIGHTS if (base / n).exists()]
    extra = f"; found {', '.join(others)}, which this PyTorch runtime cannot load" if others else ""
    raise FileNotFoundError(f"no model weights ({' or '.join(WEIGHT_FILES)}) found in {model_dir}{extra}")


def resolve_task(model_dir: str) -> str:
    task = os.environ.get("HF_TASK", "").strip()
    if task:
        return task
    files = os.listdir(model_dir)
    if "config.json" in files:
        return infer_task_from_model_architecture(os.path.join(model_dir, "config.json"))
    if "model_index.json" in files:
        return "text-to-image"
    raise ValueError(f"You need to define one of the following {supported_tasks()} or text-to-image as env 'HF_TASK'.")


def get_pipeline(task: str, model_dir: str, device: int = -1, **kwargs: Any) -> Any:
    """A pipeline for ``task`` over the model files in ``model_dir``."""
    import torch

    from modelhost.serving.runtimes.huggingface.compat import is_compat_task, load_compat_pipeline
    from modelhost.serving.runtimes.huggingface.sentence import SENTENCE_TASKS, load_sentence_pipeline

    remote = kwargs.pop("trust_remote_code", trust_remote_code())
    torch_device = torch.device("cpu") if device < 0 else torch.device(f"cuda:{device}")
    if task in SENTENCE_TASKS:
        return load_sentence_pipeline(task, model_dir, str(torch_device), remote)
    if is_compat_task(task):
        return load_compat_pipeline(task, model_dir, torch_device, remote)
    if task == "text-to-image":
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(model_dir, torch_dtype=torch.float32).to(torch_device)
        return _OneImage(pipe)
    from transformers import pipeline as make_pipeline

    build: Any = make_pipeline  # its overloads are per literal task name
    return build(task=task, model=model_dir, device=device, trust_remote_code=remote, dtype=torch.float32, **kwargs)


class _OneImage:
    """A diffusers text-to-image pipeline returning exactly one PIL image, as the toolkit's."""

    task = "text-to-image"

    def __init__(self, pipe: Any) -> None:
        self.model = pipe

    def __call__(self, prompt: Any, **kwargs: Any) -> Any:
        kwargs["num_images_per_prompt"] = 1
        return self.model(prompt, **kwargs).images[0]


def load_model(model_dir: str) -> Any:
    """The runtime's default ``model_fn``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_id = os.environ.get("HF_MODEL_ID", "").strip()
    if model_id:
        token = os.environ.get("HF_API_TOKEN") or None  # huggingface_hub reads HF_TOKEN by itself
        model_dir = download_model(model_id, os.environ.get("HF_MODEL_REVISION") or None, token)
    task = resolve_task(model_dir)
    validate_task(task)
    if task != "text-to-image":
        check_weights(model_dir)
    log.info("loading %s pipeline from %s", task, model_dir)
    return get_pipeline(task, model_dir, device=-1)
