"""The multi-model container contract (SageMaker's, as a bring-your-own MME container serves it), inside
an instance started with ``SAGEMAKER_MULTI_MODEL=true``:

    POST   /models                 {"model_name", "url"}: load the extracted model at url; 409 if loaded,
                                   507 when memory runs out
    GET    /models                 {"models": [{"modelName", "modelUrl"}], "nextPageToken"?} (?limit,
                                   ?next_page_token)
    GET    /models/{name}          {"modelName", "modelUrl"}; 404 if not loaded
    DELETE /models/{name}          unload (memory handed back before answering); 404 if not loaded
    POST   /models/{name}/invoke   the model's handler chain; 404 if not loaded
    GET    /ping

Which models are loaded, and when to evict, is the platform's business (backends/local/multimodel.py);
``model_name`` is its opaque id. Loads run on their own threads so loaded models keep answering.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import json
import logging
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from modelhost.serving.errors import ModelLoadError, ModelServerError
from modelhost.serving.handler import Handler
from modelhost.serving.images import detect_runtime
from modelhost.serving.runtimes import RUNTIME_MODULES

log = logging.getLogger("modelhost.serving.multimodel")
LOAD_THREADS = 2
PAGE_SIZE = 100


@dataclass
class LoadedModel:
    name: str
    url: str
    handler: Handler


def _trim(collect: bool = False) -> None:
    """Give freed heap back to the OS so the platform's RSS measurement sees an unload. (A full
    gc.collect costs tens of ms per unload; a model's memory is freed by reference counting.)"""
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MultiModelApp:
    def __init__(self, threads: int = 1) -> None:
        self.models: dict[str, LoadedModel] = {}
        self.loading: set[str] = set()
        self.loader = ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="load")
        self.executor = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="model")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        parts = [p for p in path.split("/") if p]
        body = await _read(receive)
        if path == "/ping":
            await _answer(send, 200, b"", b"text/plain")
        elif parts == ["models"] and method == "POST":
            await self._load(send, body)
        elif parts == ["models"] and method == "GET":
            await self._list(send, scope.get("query_string", b""))
        elif len(parts) == 2 and parts[0] == "models" and method in ("GET", "DELETE"):
            await (self._describe if method == "GET" else self._unload)(send, parts[1])
        elif len(parts) == 3 and parts[0] == "models" and parts[2] == "invoke" and method == "POST":
            await self._invoke(send, parts[1], scope["headers"], body)
        else:
            await _text(send, 404, f"{method} {path} not found")

    async def _load(self, send: Any, body: bytes) -> None:
        try:
            doc = json.loads(body or b"{}")
            name, url = str(doc["model_name"]), str(doc["url"])
        except (ValueError, KeyError, TypeError):
            await _text(send, 400, 'POST /models needs a JSON body {"model_name": ..., "url": ...}')
            return
        if name in self.models or name in self.loading:
            await _text(send, 409, f"Model {name} is already loaded.")
            return
        self.loading.add(name)
        try:
            handler = await asyncio.get_running_loop().run_in_executor(self.loader, _load_handler, Path(url))
        except MemoryError:
            _trim(collect=True)
            await _text(send, 507, f"Not enough memory to load model {name}.")
            return
        except ModelLoadError as exc:
            if isinstance(exc.__cause__, MemoryError):  # model_fn ran out of memory: the platform evicts
                _trim(collect=True)
                await _text(send, 507, f"Not enough memory to load model {name}: {exc.reason}")
            else:
                await _text(send, 500, exc.reason)
            return
        except Exception as exc:
            await _text(send, 500, f"Failed to load model: {type(exc).__name__}: {exc}")
            return
        finally:
            self.loading.discard(name)
        self.models[name] = LoadedModel(name, url, handler)
        await _json(send, 200, {"status": f"Model {name} loaded.", "modelName": name})

    async def _list(self, send: Any, query: bytes) -> None:
        params = parse_qs(query.decode("latin-1"))
        limit = int((params.get("limit") or [str(PAGE_SIZE)])[0])
        start = int((params.get("next_page_token") or ["0"])[0] or 0)
        names = sorted(self.models)
        page = names[start : start + limit]
        doc: dict[str, Any] = {"models": [{"modelName": n, "modelUrl": self.models[n].url} for n in page]}
        if start + limit < len(names):
            doc["nextPageToken"] = str(start + limit)
        await _json(send, 200, doc)

    async def _describe(self, send: Any, name: str) -> None:
        model = self.models.get(name)
        if model is None:
            await _text(send, 404, f"Model {name} is not loaded.")
            return
        await _json(send, 200, {"modelName": name, "modelUrl": model.url})

    async def _unload(self, send: Any, name: str) -> None:
        model = self.models.pop(name, None)
        if model is None:
            await _text(send, 404, f"Model {name} is not loaded.")
            return
        del model
        await asyncio.get_running_loop().run_in_executor(self.loader, _trim)
        await _json(send, 200, {"status": f"Model {name} unloaded."})

    async def _invoke(self, send: Any, name: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        model = self.models.get(name)
        if model is None:
            await _text(send, 404, f"Model {name} is not loaded.")
            return
        fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        try:
            out, out_type, attrs = await asyncio.get_running_loop().run_in_executor(
                self.executor,
                model.handler.invoke,
                body,
                fields.get("content-type"),
                fields.get("accept"),
                fields.get("x-amzn-sagemaker-custom-attributes"),
                fields.get("x-amzn-sagemaker-inference-id"),
            )
        except ModelServerError as exc:
            await _text(send, exc.status, exc.message)
            return
        except MemoryError:
            await _text(send, 507, f"Not enough memory to run model {name}.")
            return
        except Exception as exc:
            tb = "".join(traceback.format_exception(exc))
            log.error("invocation of %s failed:\n%s", name, tb)
            await _text(send, 500, f"{type(exc).__name__}: {exc}\n{tb}")
            return
        extra = [(b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1"))] if attrs is not None else []
        await _answer(send, 200, out, out_type.encode("latin-1"), extra)


def _load_handler(model_dir: Path) -> Handler:
    if not model_dir.is_dir():
        raise ModelLoadError(f"Failed to load model: {model_dir} does not exist")
    runtime = os.environ.get("MODELHOST_RUNTIME") or detect_runtime(model_dir)
    if runtime is None:
        raise ModelLoadError(f"MODELHOST_RUNTIME is not set and no known model files are in {model_dir}")
    handler = Handler(model_dir, runtime)
    _trim()  # the loader's temporary buffers are not the model's memory: hand them back before it is measured
    return handler


async def _read(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _text(send: Any, status: int, text: str) -> None:
    await _answer(send, status, text.encode("utf-8"), b"text/plain; charset=utf-8")


async def _json(send: Any, status: int, doc: Any) -> None:
    await _answer(send, status, json.dumps(doc).encode(), b"application/json")


# Imported before the socket exists, so the platform's per-model RSS measurement (taken from the first
# /ping on) does not charge the framework's own import to the first model loaded.
WARM_UP = {
    "sklearn": (
        "joblib",
        "sklearn.base",
        "sklearn.linear_model",
        "sklearn.neighbors",
        "sklearn.ensemble",
        "sklearn.pipeline",
        "sklearn.preprocessing",
        "sklearn.decomposition",
    ),
    "xgboost": ("xgboost",),
    "pytorch": ("torch",),
    "onnx": ("onnxruntime",),
}


def _warm_up() -> None:
    runtime = os.environ.get("MODELHOST_RUNTIME", "")
    names = os.environ.get("MODELHOST_MME_PRELOAD")
    modules = [n for n in names.split(",") if n] if names is not None else list(WARM_UP.get(runtime, ()))
    if runtime:
        modules.insert(0, RUNTIME_MODULES.get(runtime, ""))
    for name in modules:
        if name:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                log.warning("warm-up import of %s failed: %s", name, exc)
    _trim(collect=True)


def serve(uds: str, keep_alive: float) -> int:
    """Run the contract on the unix socket ``uds`` until SIGTERM."""
    import uvicorn

    if os.path.exists(uds):
        os.unlink(uds)
    _warm_up()
    app = MultiModelApp(threads=int(os.environ.get("MODELHOST_WORKER_THREADS", "1")))
    config = uvicorn.Config(
        app,
        uds=uds,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=int(keep_alive),
    )
    print(f"modelhost multi-model worker pid {os.getpid()} serving on {uds}", flush=True)
    try:
        uvicorn.Server(config).run()
    finally:
        app.loader.shutdown(wait=False, cancel_futures=True)
        app.executor.shutdown(wait=False, cancel_futures=True)
    return 0
