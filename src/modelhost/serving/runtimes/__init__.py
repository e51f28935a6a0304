"""Per-framework default handler functions, looked up by the runtime name (env ``MODELHOST_RUNTIME``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelhost.serving.errors import ModelLoadError


@dataclass(frozen=True)
class Runtime:
    """Defaults used for whatever the user module does not define (none of them take a context)."""

    name: str
    model_fn: Callable[[str], Any] | None
    input_fn: Callable[[Any, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]
    # Response type when the request has no Accept (or */*) and SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT is unset.
    default_accept: str = "application/json"
    # Maps any exception of the request chain (user code included) to the one the worker answers with; None keeps
    # the generic behaviour (ModelServerError keeps its status, anything else is a 500). The HF toolkit: all 400.
    map_error: Callable[[Exception], Exception] | None = None
    # A container's own user-code contract besides model_fn/input_fn/...: (user module) -> transform or None
    # (None: the module does not use it). TF Serving's input_handler/output_handler (runtimes/tfs_handlers.py).
    user_transform: Callable[[Any], Callable[..., Any] | None] | None = None


# Runtime name -> module defining RUNTIME. Imported lazily so e.g. the python runtime never imports xgboost.
RUNTIME_MODULES: dict[str, str] = {
    "sklearn": "modelhost.serving.runtimes.sklearn",
    "xgboost": "modelhost.serving.runtimes.xgboost",
    "python": "modelhost.serving.runtimes.generic",
    "huggingface": "modelhost.serving.runtimes.huggingface",
    "pytorch": "modelhost.serving.runtimes.pytorch",
    "onnx": "modelhost.serving.runtimes.onnx",
    "spacy": "modelhost.serving.runtimes.spacy",
    "tensorflow": "modelhost.serving.runtimes.tensorflow",
}


def get_runtime(name: str) -> Runtime:
    module = RUNTIME_MODULES.get(name)
    if module is None:
        known = ", ".join(sorted(RUNTIME_MODULES))
        raise ModelLoadError(f"Unsupported runtime {name!r} (MODELHOST_RUNTIME); expected one of: {known}")
    try:
        runtime: Runtime = importlib.import_module(module).RUNTIME
    except ImportError as e:
        raise ModelLoadError(f"Runtime {name!r} is not available: {type(e).__name__}: {e}") from e
    return runtime
