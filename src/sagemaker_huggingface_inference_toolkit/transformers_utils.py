"""The toolkit's model loading helpers (``get_pipeline``, ``infer_task_from_model_architecture``, ...)."""

from typing import Any

from modelhost.serving.runtimes.huggingface.loading import (  # noqa: F401
    ARCHITECTURES_2_TASK,
    get_pipeline,
    infer_task_from_model_architecture,
    strtobool,
)
from modelhost.serving.runtimes.huggingface.loading import FRAMEWORK_PATTERNS as FRAMEWORK_MAPPING  # noqa: F401


def _is_gpu_available() -> bool:
    """modelhost runs HF pipelines on the CPU."""
    return False


def _get_framework() -> str:
    return "pytorch"


def _load_model_from_hub(model_id: str, model_dir: Any = None, revision: Any = None, use_auth_token: Any = None) -> str:
    """The local snapshot dir of ``model_id`` (in the shared Hub cache; ``model_dir`` is not used)."""
    from modelhost.serving.runtimes.huggingface.loading import download_model

    return download_model(model_id, revision, use_auth_token)
