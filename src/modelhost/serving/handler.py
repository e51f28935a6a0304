"""The handler chain of the SageMaker framework containers (sagemaker-inference-toolkit semantics).

``model_fn`` runs once at load; each request runs ``transform_fn`` or ``input_fn -> predict_fn -> output_fn``.
Everything that can be decided once (which functions, whether they take a context) is decided in
``Handler.__init__`` so the per-request path is a few plain calls.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from modelhost.serving import codecs
from modelhost.serving.errors import BadRequest, ModelLoadError
from modelhost.serving.requirements import ensure_requirements
from modelhost.serving.runtimes import Runtime, get_runtime

log = logging.getLogger(__name__)

SAGEMAKER_MODEL_DIR = "/opt/ml/model"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"

# (model, data, content_type, accept, context) -> body | (body, content_type)
Transform = Callable[[Any, Any, str, str, "Context"], Any]


@dataclass(slots=True)
class Context:
    """What toolkit handlers receive as ``context``; user code may set ``response_custom_attributes``."""

    model_dir: str
    request_content_type: str | None = None
    accept_header: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None
    system_properties: dict[str, Any] = field(default_factory=dict)
    response_custom_attributes: str | None = None


def code_dir(model_dir: Path) -> Path:
    """Where user code lives: SAGEMAKER_SUBMIT_DIRECTORY mapped onto this instance's model dir."""
    submit = os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if not submit:
        return model_dir / "code"
    if submit.startswith("s3://"):
        log.warning(
            "SAGEMAKER_SUBMIT_DIRECTORY=%s: S3 source dirs are not supported yet; using %s/code",
            submit,
            model_dir,
        )
        return model_dir / "code"
    if submit.startswith("file://"):
        submit = submit[len("file://") :]
    path = Path(submit)
    if path == Path(SAGEMAKER_MODEL_DIR) or Path(SAGEMAKER_MODEL_DIR) in path.parents:
        return model_dir / path.relative_to(SAGEMAKER_MODEL_DIR)
    return path


def load_user_module(model_dir: Path) -> ModuleType | None:
    """Import ``SAGEMAKER_PROGRAM`` (default inference.py) from the code dir, or None if there is none."""
    program = os.environ.get("SAGEMAKER_PROGRAM", "")
    directory = code_dir(model_dir)
    path = directory / (program or "inference.py")
    if not path.suffix:
        path = path.with_suffix(".py")
    if not path.is_file():
        if program:
            raise ModelLoadError(f"SAGEMAKER_PROGRAM {program!r} not found in {directory}")
        return None
    name = path.stem
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))  # so the user module can import its siblings
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"Cannot import user code {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"Failed to import user code {path}: {type(e).__name__}: {e}") from e
    return module


def _takes_context(fn: Callable[..., Any], nargs: int, name: str) -> bool:
    """Whether ``fn`` takes an extra trailing context argument (decided once, from its signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins/C callables: assume the plain form
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    required = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)
    if positional < nargs or required > nargs + 1:
        raise ModelLoadError(f"{name} must take {nargs} positional arguments plus an optional context")
    return positional > nargs


def _adapt2(fn: Callable[..., Any], name: str) -> Callable[[Any, Any, Context], Any]:
    if _takes_context(fn, 2, name):
        return fn
    return lambda a, b, ctx: fn(a, b)


def _mapping_errors(transform: Transform, map_error: Callable[[Exception], Exception]) -> Transform:
    """``transform`` with every exception replaced by ``map_error(exc)`` (a runtime's own error convention)."""

    def mapped(model: Any, data: Any, content_type: str, accept: str, ctx: Context) -> Any:
        try:
            return transform(model, data, content_type, accept, ctx)
        except Exception as e:
            raise map_error(e) from e

    return mapped


class Handler:
    """Loads the model once and turns request bodies into response bodies."""

    def __init__(self, model_dir: str | Path, runtime: str | Runtime) -> None:
        self.model_dir = str(model_dir)
        # code/requirements.txt first: the runtime and the user module may import what it installs.
        ensure_requirements(code_dir(Path(model_dir)), Path(model_dir))
        self.runtime = get_runtime(runtime) if isinstance(runtime, str) else runtime
        self.user_module = load_user_module(Path(model_dir))
        user = self.user_module
        fns = (
            {n: getattr(user, n, None) for n in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")}
            if user
            else {}
        )
        if fns.get("transform_fn") and any(fns.get(n) for n in ("input_fn", "predict_fn", "output_fn")):
            raise ModelLoadError("transform_fn cannot be defined together with input_fn, predict_fn or output_fn")

        self.system_properties = {"model_dir": self.model_dir}
        env_accept = os.environ.get(DEFAULT_ACCEPT_ENV)
        # Algorithm-mode defaults (XGBoost's text/csv) apply only without user code, as in the real images.
        self.default_accept = env_accept or (self.runtime.default_accept if user is None else codecs.JSON)
        self.model = self._load_model(fns.get("model_fn"))
        self.transform = self._build_transform(fns)
        if self.runtime.map_error is not None:
            self.transform = _mapping_errors(self.transform, self.runtime.map_error)

    def _load_model(self, user_model_fn: Callable[..., Any] | None) -> Any:
        if user_model_fn is None:
            if self.runtime.model_fn is None:
                raise ModelLoadError(f"the {self.runtime.name} runtime needs code/inference.py with model_fn")
            try:
                return self.runtime.model_fn(self.model_dir)
            except ModelLoadError:  # the runtime's own one-line reason
                raise
            except Exception as e:
                raise ModelLoadError(f"Failed to load model: {type(e).__name__}: {e}") from e
        try:
            if _takes_context(user_model_fn, 1, "model_fn"):
                ctx = Context(self.model_dir, system_properties=self.system_properties)
                return user_model_fn(self.model_dir, ctx)
            return user_model_fn(self.model_dir)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"model_fn raised {type(e).__name__}: {e}") from e

    def _build_transform(self, fns: dict[str, Any]) -> Transform:
        if self.user_module is not None and self.runtime.user_transform is not None:
            own = self.runtime.user_transform(self.user_module)  # e.g. TF Serving's input_handler/output_handler
            if own is not None:
                return own
        transform_fn = fns.get("transform_fn")
        if transform_fn is not None:
            if _takes_context(transform_fn, 4, "transform_fn"):
                return transform_fn
            return lambda model, data, ct, accept, ctx: transform_fn(model, data, ct, accept)
        rt = self.runtime
        input_fn = _adapt2(fns.get("input_fn") or rt.input_fn, "input_fn")
        predict_fn = _adapt2(fns.get("predict_fn") or rt.predict_fn, "predict_fn")
        output_fn = _adapt2(fns.get("output_fn") or rt.output_fn, "output_fn")

        def transform(model: Any, data: Any, content_type: str, accept: str, ctx: Context) -> Any:
            return output_fn(predict_fn(input_fn(data, content_type, ctx), model, ctx), accept, ctx)

        return transform

    def invoke(
        self,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
    ) -> tuple[bytes, str, str | None]:
        """Run one request; returns ``(body, content_type, response_custom_attributes)``."""
        content_type = content_type or codecs.JSON
        if not accept or accept == "*/*":
            accept = self.default_accept
        ctx = Context(self.model_dir, content_type, accept, custom_attributes, inference_id, self.system_properties)
        data: str | bytes = body
        if content_type in codecs.UTF8_TYPES or codecs.media_type(content_type) in codecs.UTF8_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadRequest(f"Failed to decode {content_type} body: not valid UTF-8 ({e})") from e
        result = self.transform(self.model, data, content_type, accept, ctx)
        if type(result) is tuple:
            result, out_type = result
            out_type = out_type or accept
        else:
            out_type = accept
        if isinstance(result, str):
            result = result.encode("utf-8")
        elif not isinstance(result, bytes):
            if isinstance(result, bytearray | memoryview):
                result = bytes(result)
            else:
                kind = type(result).__name__
                raise TypeError(f"output_fn/transform_fn must return str or bytes, got {kind}")
        return result, out_type, ctx.response_custom_attributes
