"""``modelhost serve-model``: one model behind the SageMaker container contract over TCP (``GET /ping``,
``POST /invocations``, port 8080), what a bring-your-own container must do, with no modelhost server.

The model is loaded through the serving runtime's handler chain (``serving.handler.Handler``: the
same runtimes, ``model_fn``/``input_fn``/... and codecs as an endpoint's instances), so an exported
model answers exactly as its endpoint did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.export.fetch import FetchError, extract
from modelhost.export.inspect import decide
from modelhost.export.writer import SERVING_FILE
from modelhost.serving.errors import ModelServerError
from modelhost.serving.handler import Handler
from modelhost.serving.images import runtime_for_image

log = logging.getLogger("modelhost.serve_model")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Served:
    """What serve-model runs: the extracted model, its runtime and the environment it was deployed with."""

    model_dir: Path
    runtime: str
    environment: dict[str, str] = field(default_factory=dict)


def _from_export(variant_dir: Path) -> Served:
    config = json.loads((variant_dir / SERVING_FILE).read_text())
    return Served(variant_dir / "model", config["runtime"], dict(config.get("environment") or {}))


def locate(path: Path, image: str = "", runtime: str = "") -> Served:
    """An export directory (one variant, or a variant's directory), an extracted model directory or a
    model.tar.gz; ``runtime``/``image`` say what to run when the files do not."""
    if path.is_dir() and (path / SERVING_FILE).is_file():
        served = _from_export(path)
        if runtime:
            served.runtime = runtime
        return served
    if path.is_dir():
        variants = sorted(p for p in path.iterdir() if (p / SERVING_FILE).is_file())
        if len(variants) == 1:
            return locate(variants[0], image, runtime)
        if variants:
            names = ", ".join(p.name for p in variants)
            raise FetchError(f"{path} holds several variants ({names}); name one: {path / variants[0].name}")
        model_dir = path
    elif path.is_file():
        model_dir = extract(path, Path(tempfile.mkdtemp(prefix="serve-model-")))
    else:
        raise FetchError(f"{path} does not exist")
    chosen = runtime or (runtime_for_image(image) if image else None) or decide(model_dir)[0]
    if image and not runtime and runtime_for_image(image) is None:
        raise FetchError(f"image {image} is not one modelhost can run; pass --runtime")
    if chosen is None:
        raise FetchError(f"cannot tell the framework of {path}; pass --runtime NAME or --image URI")
    return Served(model_dir, chosen)


def prepare_environment(served: Served) -> None:
    """The model's environment (what its container had), without overriding what the caller set."""
    for key, value in served.environment.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("SAGEMAKER_INFERENCE_MODEL_DIR", str(served.model_dir))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelhost"
    os.environ.setdefault("MODELHOST_REQUIREMENTS_DIR", str(cache / "requirements"))
    os.environ.setdefault("MODELHOST_HF_CACHE", str(cache / "hf"))


class ContainerApp:
    """Raw ASGI: ``/ping`` answers 200 once the model is loaded (the app exists only then)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping" and method in ("GET", "HEAD"):
            await _respond(send, 200, b"", "text/plain")
        elif path == "/invocations" and method == "POST":
            await self._invoke(scope, receive, send)
        else:
            await _respond(send, 404, f"{method} {path} not found".encode(), "text/plain; charset=utf-8")

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            out, out_type, attrs = await asyncio.to_thread(
                self.handler.invoke,
                b"".join(chunks),
                headers.get("content-type"),
                headers.get("accept"),
                headers.get("x-amzn-sagemaker-custom-attributes"),
                headers.get("x-amzn-sagemaker-inference-id"),
            )
        except ModelServerError as e:
            await _respond(send, e.status, e.message.encode(), "text/plain; charset=utf-8")
            return
        except Exception as e:
            log.error("invocation failed:\n%s", "".join(traceback.format_exception(e)))
            await _respond(send, 500, f"{type(e).__name__}: {e}".encode(), "text/plain; charset=utf-8")
            return
        extra = [(b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1"))] if attrs is not None else []
        await _respond(send, 200, out, out_type, extra)


async def _respond(send: Send, status: int, body: bytes, content_type: str, extra: list | None = None) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def serve_model(served: Served, host: str, port: int) -> None:
    import uvicorn

    prepare_environment(served)
    handler = Handler(served.model_dir, served.runtime)  # load before listening: /ping means ready
    print(f"modelhost serve-model: {served.runtime} model from {served.model_dir} on http://{host}:{port}", flush=True)
    uvicorn.run(ContainerApp(handler), host=host, port=port, log_level="warning", access_log=False, lifespan="off")
