"""ASGI app assembly: one port for the SageMaker control plane and runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from modelhost.config import Settings
from modelhost.control import autoscaling, logs_api
from modelhost.control.context import ControlContext
from modelhost.control.operations import SAGEMAKER_OPERATIONS, Operation
from modelhost.controllers.autoscaler import Autoscaler
from modelhost.controllers.reconciler import Reconciler
from modelhost.controllers.transforms import TransformSupervisor
from modelhost.errors import ApiError, InternalFailure, UnknownOperationException
from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.metrics import REGISTRY
from modelhost.hosting.router import Router
from modelhost.server import auth, s3
from modelhost.server.async_runtime import AsyncInvocations
from modelhost.server.awsjson import decode_body, error_response, get_schema, json_response, parse_target
from modelhost.server.runtime import Invocations
from modelhost.server.sts import StsApp, is_sts_request
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.buckets import BucketStore
from modelhost.store.db import MetadataStore
from modelhost.store.logs import endpoint_log_path
from modelhost.store.multipart import MultipartUploads
from modelhost.store.objects import ObjectStore
from modelhost.store.remote_s3 import RemoteS3

log = logging.getLogger("modelhost.server")

SERVICES: dict[str, tuple[str, dict[str, Operation]]] = {
    "SageMaker": ("sagemaker", SAGEMAKER_OPERATIONS),
    "AnyScaleFrontendService": ("application-autoscaling", autoscaling.OPERATIONS),
    "Logs_20140328": ("logs", logs_api.OPERATIONS),  # transform job logs for the SDK (logs=True)
}


class Services:
    """Everything the routes share, built at startup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MetadataStore(settings.db_url)
        remote = (
            RemoteS3(settings.s3_endpoint_url, settings.data_dir / "s3-mirror", settings.region)
            if settings.s3_endpoint_url
            else None
        )
        self.objects = ObjectStore(settings.buckets_dir, remote)
        self.artifacts = ArtifactCache(self.objects, settings.model_cache_dir)
        self.router = Router(settings.account_id, settings.instance_wait_timeout)
        self.reconciler = Reconciler(settings, self.store, self.artifacts, self.router)
        self.control = ControlContext(
            settings, self.store, self.objects, wake_reconciler=self.reconciler.wake, running=self.reconciler
        )
        self.autoscaler = Autoscaler(
            self.control, self.reconciler, settings.autoscale_interval, settings.autoscale_window
        )
        # Asynchronous inference: the durable queue; it learns of endpoint changes with the reconciler.
        self.buckets = BucketStore(settings.buckets_dir, settings.data_dir)
        self.asyncq = AsyncInference(settings, self.store, self.buckets, self.router, remote)
        # Batch transform jobs: runs InProgress jobs (and resumes them after a restart).
        self.transforms = TransformSupervisor(settings, self.store, self.objects, self.artifacts)
        self.transforms.buckets = self.buckets
        self.autoscaler.backlog = self.asyncq.backlog
        wake_reconciler = self.control.wake_reconciler

        def wake() -> None:
            wake_reconciler()
            self.asyncq.wake()

        self.control.wake_reconciler = wake


def create_app(settings: Settings) -> FrontDoor:
    services = Services(settings)

    async def control_plane(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            auth.authenticate(request)
            prefix, operation = parse_target(request.headers.get("x-amz-target"))
            service = SERVICES.get(prefix)
            if service is None:
                raise UnknownOperationException(f"Unknown service target: {prefix}.{operation}")
            schema_name, operations = service
            handler = operations.get(operation)
            if handler is None:
                raise UnknownOperationException(
                    f"Operation {operation} is not supported by modelhost."
                    if get_schema(schema_name).has_operation(operation)
                    else f"Unknown operation {operation}."
                )
            params = decode_body(await request.body())
            schema = get_schema(schema_name)
            schema.validate(operation, params)
            result = await run_in_threadpool(handler, services.control, params)
            return json_response(schema.output_to_json(operation, result), request_id)
        except ApiError as err:
            return error_response(err, request_id)
        except Exception as exc:  # never leak a stack trace as a non-AWS response
            log.exception("control plane operation failed")
            return error_response(InternalFailure(f"{type(exc).__name__}: {exc}"), request_id)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def ping(_request: Request) -> Response:
        return PlainTextResponse("")

    async def endpoint_logs(request: Request) -> Response:
        """The endpoint's log stream from a byte offset (the CLI polls this for --follow)."""
        path = endpoint_log_path(settings.logs_dir, request.path_params["name"])
        offset = int(request.query_params.get("offset", "0"))

        def read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(4 * 1024 * 1024)
            except FileNotFoundError:
                return None

        data = await asyncio.to_thread(read)
        if data is None:
            return PlainTextResponse(f"No logs for endpoint {request.path_params['name']}.\n", status_code=404)
        return Response(data, media_type="text/plain", headers={"X-Modelhost-Next-Offset": str(offset + len(data))})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await services.reconciler.start()
        await services.autoscaler.start()
        await services.asyncq.start()
        await services.transforms.start()
        try:
            yield
        finally:
            await services.transforms.shutdown()
            await services.asyncq.stop()
            await services.autoscaler.stop()
            await services.reconciler.shutdown()

    app = Starlette(
        routes=[
            Route("/", control_plane, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/modelhost/endpoints/{name}/logs", endpoint_logs, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    buckets = services.buckets
    s3_app = s3.S3App(buckets, MultipartUploads(buckets, settings.data_dir / "uploads"), settings.region)
    invocations = Invocations(services.router)
    invocations.async_endpoints = services.asyncq.names  # InvokeEndpoint refuses these
    return FrontDoor(
        app, invocations, s3_app, StsApp(settings.account_id), async_invocations=AsyncInvocations(services.asyncq)
    )


class FrontDoor:
    """The ASGI entry: InvokeEndpoint goes straight to its raw handler (the hot path skips
    Starlette's routing and Request objects); everything else goes to the Starlette app."""

    PREFIX = "/endpoints/"
    SUFFIX = "/invocations"
    ASYNC_SUFFIX = "/async-invocations"

    def __init__(
        self,
        app: Starlette,
        invocations: Invocations,
        s3_app: s3.S3App | None = None,
        sts_app: StsApp | None = None,
        async_invocations: AsyncInvocations | None = None,
    ) -> None:
        self.app = app
        self.invocations = invocations
        self.async_invocations = async_invocations
        self.s3 = s3_app
        self.sts = sts_app
        self.state = app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.s3 is not None and s3.is_s3_request(scope):  # S3 first: a bucket may be called "endpoints"
            await self.s3(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == "/" and self.sts is not None and is_sts_request(scope):
                await self.sts(scope, receive, send)
                return
            if path.startswith(self.PREFIX) and path.endswith(self.SUFFIX):
                name = path[len(self.PREFIX) : -len(self.SUFFIX)]
                if "/" not in name:
                    await self.invocations(scope, receive, send, name)
                    return
            elif path.startswith(self.PREFIX) and path.endswith(self.ASYNC_SUFFIX) and self.async_invocations:
                name = path[len(self.PREFIX) : -len(self.ASYNC_SUFFIX)]
                if "/" not in name:
                    await self.async_invocations(scope, receive, send, name)
                    return
        await self.app(scope, receive, send)


def serve(settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
