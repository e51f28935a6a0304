"""The server's ASGI app from the services the composition root (app.py) built: the front door's
routes in order, the middleware stack, and the Starlette app for the JSON 1.1 API and our own routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from modelhost.config import Settings
from modelhost.console import Console
from modelhost.console.app import PREFIX as CONSOLE_PREFIX
from modelhost.control.context import ControlContext
from modelhost.errors import UnknownOperationException
from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.functions import FunctionInvoker
from modelhost.hosting.router import Router
from modelhost.security import AuditLog, Verifier, load_credentials
from modelhost.security.sessions import Sessions, server_secret
from modelhost.server import admin, client_config, protocols
from modelhost.server.asgi import ASGIApp, Scope, request_id
from modelhost.server.async_runtime import AsyncInvocations
from modelhost.server.console_bridge import ServerConsole
from modelhost.server.control_plane import ControlPlane
from modelhost.server.fast_path import FastPath
from modelhost.server.front_door import (
    FrontDoor,
    Middleware,
    Route,
    anything,
    is_iam,
    is_invoke,
    is_invoke_async,
    is_invoke_stream,
    is_s3,
    is_sts,
)
from modelhost.server.iam import IamApp
from modelhost.server.json_wire import error_response
from modelhost.server.lambda_api import LambdaApi, is_lambda
from modelhost.server.middleware import STACK, Authenticate, Guard, HostPolicy, Limits
from modelhost.server.middleware.auth import Security
from modelhost.server.runtime import Invocations
from modelhost.server.s3 import S3App
from modelhost.server.s3.proxy import S3Proxy
from modelhost.server.stream_runtime import StreamInvocations
from modelhost.server.sts import StsApp
from modelhost.store.buckets import BucketStore
from modelhost.store.multipart import MultipartUploads

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def build_asgi(
    settings: Settings,
    *,
    control: ControlContext,
    router: Router,
    asyncq: AsyncInference,
    buckets: BucketStore,
    uploads: MultipartUploads,
    lifespan: Lifespan,
    functions: FunctionInvoker | None = None,
) -> FrontDoor:
    """``lifespan`` starts and stops the services; the server's own resources close after it."""
    client_config.write_sdk_defaults(settings)  # the SDK defaults file `modelhost env` points at
    s3_app: ASGIApp
    proxy: S3Proxy | None = None
    if settings.s3_endpoint_url:  # the S3 API is the configured service's, re-signed
        s3_app = proxy = S3Proxy(settings.s3_endpoint_url, settings.region)
    else:
        s3_app = S3App(buckets, uploads, settings.region)

    @contextlib.asynccontextmanager
    async def server_lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            if proxy is not None:
                await proxy.aclose()

    api_plane = ControlPlane(control)
    api = Starlette(
        routes=[
            StarletteRoute("/", api_plane.handle, methods=["POST"]),
            *admin.routes(settings.logs_dir),
            client_config.route(settings),  # what `modelhost env` prints comes from here
        ],
        exception_handlers={404: no_route, 405: no_route},
        lifespan=server_lifespan,
    )
    # Authenticate verifies signatures when a credentials file is configured (server/middleware/auth.py).
    security = security_from(settings)
    invocations = Invocations(router, settings.account_id)
    invocations.async_endpoints = asyncq.names  # InvokeEndpoint refuses these (a set kept current in place)
    streams = StreamInvocations(router, settings.account_id)
    streams.async_endpoints = asyncq.names
    routes = [
        *(
            [Route("lambda", is_lambda, LambdaApi(control, functions), protocols.REST_JSON)] if functions else []
        ),  # before S3: unsigned date-like paths are Lambda's
        Route("s3", is_s3, s3_app, protocols.REST_XML),  # first: a bucket may be called "endpoints"
        Route("iam", is_iam, IamApp(settings.role_name, settings.account_id), protocols.QUERY),
        Route("sts", is_sts, StsApp(settings.account_id, settings.role_name), protocols.QUERY),
        Route("invoke", is_invoke, invocations, protocols.REST_JSON),
        Route("invoke-stream", is_invoke_stream, streams, protocols.REST_JSON),
        Route("invoke-async", is_invoke_async, AsyncInvocations(asyncq, settings.account_id), protocols.REST_JSON),
        Route("console", is_console, console_app(settings, api_plane, invocations, security), protocols.JSON),
        Route("api", anything, api, protocols.JSON),
    ]
    # Guard: the allowed Host names and the request limits (server/middleware/guard.py, limits.py).
    guard = partial(
        Guard, hosts=HostPolicy.parse(settings.host, settings.allowed_hosts), limits=Limits.from_settings(settings)
    )
    auth = partial(Authenticate, security=security)
    configured: dict[object, Middleware] = {Authenticate: auth, Guard: guard}
    stack = tuple(configured.get(m, m) for m in STACK)
    front_door = FrontDoor(routes, stack)
    front_door.fast_path = FastPath.build(front_door, guard, auth, invocations)
    return front_door


async def no_route(request: Request, exc: Exception) -> Response:
    """A path or method no route serves: an AWS JSON error (never Starlette's plain text)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    what = "is not allowed on" if status == 405 else "has no route at"
    err = UnknownOperationException(f"{request.method} {what} {request.url.path}.")
    err.status = status
    return error_response(err, request_id(request.scope))


def security_from(settings: Settings) -> Security | None:
    """The verifier over the credentials file's keys and the audit log; None without a file
    (``security.CredentialsError`` when the file cannot be used)."""
    if not settings.credentials_file:
        return None
    keyring = load_credentials(settings.credentials_file, settings.account_id)
    audit = AuditLog(settings.logs_dir / "audit.jsonl")
    sessions = Sessions(keyring, server_secret(settings.data_dir / "console-session.key"))
    return Security(Verifier(keyring), settings.region, settings.account_id, audit, sessions)


# --- the web console (console/): one more route behind the same middleware ---


def is_console(scope: Scope) -> bool:
    if scope["type"] != "http":
        return False
    path: str = scope["path"]
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def console_app(settings: Settings, plane: ControlPlane, invocations: ASGIApp, security: Security | None) -> ASGIApp:
    bridge = ServerConsole(
        plane,
        invocations,
        settings.logs_dir,
        security.sessions if security is not None else None,
        settings.logs_dir / "audit.jsonl" if security is not None else None,
        lambda name: settings.arn("endpoint", name),
    )
    return Console(bridge)
