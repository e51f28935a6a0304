"""One Ray Serve replica: modelhost's own serving runtime (the handler chain of serving/) loaded in
the replica process and called in-process through a Serve handle, so answers are byte-identical to the
local backend's instances (same runtimes, codecs, user code and error texts) without an HTTP hop.

This module is imported inside Ray worker processes: it must not import Ray Serve at module level
(the deployment is built from ``ModelReplica`` in backends/ray/fleet.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modelhost.serving.errors import ModelLoadError, ModelServerError
from modelhost.serving.worker import load_handler

log = logging.getLogger("modelhost.backends.ray.replica")

LOAD_FAILED = "modelhost-load-failed: "  # marks the reason in Serve's deployment status message
_TEXT = b"text/plain; charset=utf-8"

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


@dataclass(frozen=True)
class ArtifactSource:
    """Where a replica on any node fetches the model itself: the configured S3 service (never the head's disk)."""

    model_data_url: str | None
    model_data_source: dict | None
    s3_endpoint_url: str
    region: str
    cache_dir: str  # node-local
    max_bytes: int


def container_execution_parameters(threads: int) -> dict[str, object]:
    """What serving/worker.py answers on ``GET /execution-parameters`` for ``threads`` model threads."""
    return {"MaxConcurrentTransforms": 2 * max(threads, 1), "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def worker_threads(env: dict[str, str]) -> int:
    return max(int(env.get("MODELHOST_WORKER_THREADS", "1") or 1), 1)


class ReplicaLoadFailed(RuntimeError):
    pass


def _fetch(source: ArtifactSource) -> Path:
    from modelhost.store.artifacts import ArtifactCache
    from modelhost.store.blobs_remote import RemoteBlobStore
    from modelhost.store.remote_s3 import RemoteS3

    root = Path(source.cache_dir)
    remote = RemoteS3(source.s3_endpoint_url, root / "s3-mirror", source.region)
    blobs = RemoteBlobStore(remote, root / "s3-staging")
    cache = ArtifactCache(blobs, root / "model-cache", (root,), source.max_bytes)
    return cache.materialize(source.model_data_url, source.model_data_source, max_bytes=source.max_bytes)


def _text(status: int, text: str) -> Answer:
    body = text.encode("utf-8")
    return status, [(b"content-type", _TEXT), (b"content-length", str(len(body)).encode())], body


class ModelReplica:
    """The Serve deployment's class. The model's environment arrives as the replica's runtime_env, so
    the handler chain reads it exactly as in an instance process."""

    def __init__(self, model_dir: str, artifact: ArtifactSource | None, hung_after: float) -> None:
        logging.basicConfig(level=logging.INFO)
        try:
            path = _fetch(artifact) if artifact is not None else Path(model_dir)
            self.handler = load_handler(path)
        except ModelLoadError as exc:
            raise ReplicaLoadFailed(LOAD_FAILED + exc.reason) from None
        except Exception as exc:  # a bad artifact, user code raising in model_fn, ...
            raise ReplicaLoadFailed(f"{LOAD_FAILED}Failed to load model: {type(exc).__name__}: {exc}") from None
        self.threads = worker_threads(dict(os.environ))
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="model")
        self.hung_after = hung_after
        self._started: dict[int, float] = {}  # request -> monotonic start, for the hung-model health check
        self._next = 0
        log.info("modelhost replica pid %d serving %s model from %s", os.getpid(), self.handler.runtime.name, path)

    async def invoke(self, headers: Headers, body: bytes) -> Answer:
        """POST /invocations, as serving/worker.py answers it."""
        content_type = accept = custom_attributes = inference_id = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"x-amzn-sagemaker-custom-attributes":
                custom_attributes = value.decode("latin-1")
            elif name == b"x-amzn-sagemaker-inference-id":
                inference_id = value.decode("latin-1")
        key = self._next
        self._next += 1
        self._started[key] = time.monotonic()
        try:
            out, out_type, attrs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.handler.invoke, body, content_type, accept, custom_attributes, inference_id
            )
        except ModelServerError as e:
            return _text(e.status, e.message)
        except Exception as e:
            tb = "".join(traceback.format_exception(e))
            log.error("invocation failed:\n%s", tb)
            return _text(500, f"{type(e).__name__}: {e}\n{tb}")
        finally:
            self._started.pop(key, None)
        out_headers = [(b"content-type", out_type.encode("latin-1")), (b"content-length", str(len(out)).encode())]
        if attrs is not None:
            out_headers.append((b"x-amzn-sagemaker-custom-attributes", attrs.encode("latin-1")))
        return 200, out_headers, out

    async def execution_parameters(self) -> bytes:
        """GET /execution-parameters, as the worker answers it (batch transform asks)."""
        return json.dumps(container_execution_parameters(self.threads)).encode()

    def check_health(self) -> None:
        """Serve replaces a replica whose check fails: one stuck in a request past the timeout is hung
        (the local backend kills a timed-out instance the same way)."""
        now = time.monotonic()
        if any(now - t > self.hung_after for t in list(self._started.values())):
            raise RuntimeError(f"a request has run over {self.hung_after:g}s: the model is hung")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=False, cancel_futures=True)
