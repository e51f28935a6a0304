"""The server's side of the web console (``console.ConsoleBackend``): control-plane operations through
``ControlPlane.call`` (validated and authorized as over the wire), InvokeEndpoint through the runtime
route's own ASGI app (its checks, errors and metrics), logins through the credentials file's keys."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from modelhost.console import InvokeAnswer
from modelhost.control.operations import SAGEMAKER_OPERATIONS
from modelhost.security.sessions import Sessions
from modelhost.server.access import Caller, authorize
from modelhost.server.asgi import CALLER, ENDPOINT, REQUEST_ID, ASGIApp, Scope
from modelhost.server.control_plane import ControlPlane
from modelhost.server.fast_path import asgi_answer
from modelhost.server.runtime import Answer


class ServerConsole:
    def __init__(
        self,
        control_plane: ControlPlane,
        invocations: ASGIApp,
        logs_dir: Path,
        sessions: Sessions | None,
        audit_path: Path | None,
        endpoint_arn: Any,
    ) -> None:
        self.control_plane = control_plane
        self.invocations = invocations
        self.logs_dir = logs_dir
        self.sessions = sessions
        self.audit_path = audit_path
        self.secured = sessions is not None
        self.endpoint_arn = endpoint_arn  # name -> ARN

    async def call(self, scope: Scope, prefix: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.control_plane.call(scope, prefix, operation, params)

    def login(self, access_key: str, secret_key: str) -> str | None:
        return self.sessions.login(access_key, secret_key) if self.sessions is not None else None

    def who(self, scope: Scope) -> str | None:
        caller: Caller | None = scope.get(CALLER)
        return caller.name if caller is not None and caller.key is not None else None

    def operations(self) -> set[str]:
        return set(SAGEMAKER_OPERATIONS)

    async def invoke(self, scope: Scope, endpoint: str, body: bytes, content_type: str, accept: str) -> InvokeAnswer:
        authorize(scope, "sagemaker:InvokeEndpoint", self.endpoint_arn(endpoint))
        headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
        if accept:
            headers.append((b"accept", accept.encode("latin-1")))
        sub: Scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"/endpoints/{endpoint}/invocations",
            "query_string": b"",
            "headers": headers,
            "client": scope.get("client"),
            "server": scope.get("server"),
            ENDPOINT: endpoint,
            REQUEST_ID: str(uuid.uuid4()),
            CALLER: scope.get(CALLER),
        }
        started = time.perf_counter()
        try:
            answer = await asgi_answer(self.invocations, sub, body)
        except RuntimeError:  # the app answered nothing
            answer = Answer(500, [], b"")
        latency = (time.perf_counter() - started) * 1000
        found = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in answer.headers}
        error = found.get("x-amzn-errortype", "").split(":", 1)[0]
        if answer.status != 200 and not error:
            try:
                error = json.loads(answer.body).get("__type", "")
            except (ValueError, AttributeError):
                error = ""
        return InvokeAnswer(answer.status, found.get("content-type", ""), answer.body, latency, error)
