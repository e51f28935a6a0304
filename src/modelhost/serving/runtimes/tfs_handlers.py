"""The SageMaker TensorFlow Serving container's user-code contract: ``code/inference.py`` with
``input_handler(data, context)`` and/or ``output_handler(response, context)``.

As in that container (``sagemaker-tensorflow-serving-container``, ``python_service.py``):
``input_handler`` gets the request body as a readable stream and a ``Context`` and returns the
TF Serving REST request (a JSON string); that is sent to the model's ``predict`` (here: the
TensorFlow runtime's own REST semantics, no separate TFS process); ``output_handler`` gets the REST
response (``status_code``, ``content``, ``text``, ``json()``, as a ``requests.Response``) and returns
``(body, content_type)``. The one missing is the container's default: JSON passes through, CSV rows
become ``{"instances": [...]}``; the response body is returned as ``application/json`` unless its
status is an error, which raises. A module that only defines ``handler(data, context)`` (it calls TF
Serving itself at ``context.rest_uri``) cannot run here: there is no TF Serving process to call.
This module does not import TensorFlow: the runtime hands in its predict function.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelhost.serving import codecs
from modelhost.serving.errors import BadRequest, ModelLoadError, UnsupportedContentType

MODEL_NAME_ENV = "SAGEMAKER_TFS_DEFAULT_MODEL_NAME"
REST_PORT = 8501  # what the container's context names; nothing listens on it here


@dataclass(frozen=True)
class TfsContext:
    """The fields of the container's ``Context`` namedtuple."""

    model_name: str
    model_version: str
    method: str
    rest_uri: str
    grpc_port: str
    custom_attributes: str | None
    request_content_type: str
    accept_header: str
    content_length: int


@dataclass
class TfsResponse:
    """A TF Serving REST answer, shaped like the ``requests.Response`` handlers receive."""

    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": codecs.JSON})

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return json.loads(self.content)


def default_input_handler(data: Any, context: TfsContext) -> str:
    body = data.read()
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    media = codecs.media_type(context.request_content_type)
    if media == codecs.JSON:
        return text
    if media == codecs.CSV:
        return json.dumps({"instances": codecs.decode_csv(text).tolist()})
    raise UnsupportedContentType(context.request_content_type, [codecs.JSON, codecs.CSV])


def default_output_handler(response: TfsResponse, context: TfsContext) -> tuple[bytes, str]:
    if response.status_code != 200:
        raise BadRequest(response.text)
    return response.content, codecs.JSON


# (model, TF Serving REST request body) -> the REST response
RestPredict = Callable[[Any, str | bytes], TfsResponse]


def make_user_transform(
    rest_predict: RestPredict, identity: Callable[[str], tuple[str, str]]
) -> Callable[[Any], Callable[..., Any] | None]:
    """The runtime's ``user_transform``: ``identity(model_dir)`` is (model name, version)."""

    def user_transform(module: Any) -> Callable[..., Any] | None:
        input_handler = getattr(module, "input_handler", None)
        output_handler = getattr(module, "output_handler", None)
        if getattr(module, "handler", None) is not None and input_handler is None and output_handler is None:
            raise ModelLoadError(
                "inference.py defines handler(data, context), which calls TensorFlow Serving itself at "
                "context.rest_uri; modelhost runs SavedModels without a TF Serving process: define "
                "input_handler and/or output_handler instead"
            )
        if input_handler is None and output_handler is None:
            return None
        to_request = input_handler or default_input_handler
        from_response = output_handler or default_output_handler

        def transform(model: Any, data: Any, content_type: str, accept: str, ctx: Any) -> Any:
            body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            name, version = identity(ctx.model_dir)
            context = TfsContext(
                model_name=name,
                model_version=version,
                method="predict",
                rest_uri=f"http://localhost:{REST_PORT}/v1/models/{name}:predict",
                grpc_port="9000",
                custom_attributes=ctx.custom_attributes,
                request_content_type=content_type,
                accept_header=accept,
                content_length=len(body),
            )
            request = to_request(io.BytesIO(body), context)
            result = from_response(rest_predict(model, request), context)
            if isinstance(result, tuple):
                content, out_type = result
                return content, out_type or accept
            return result

        return transform

    return user_transform


def model_name(default: str) -> str:
    return os.environ.get(MODEL_NAME_ENV) or default
