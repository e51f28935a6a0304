"""What the console needs from the server, as a protocol the server implements (server/console_bridge.py):
control-plane operations (validated and authorized as over the wire), InvokeEndpoint through the runtime
route, console logins."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Scope = MutableMapping[str, Any]


@dataclass(frozen=True)
class InvokeAnswer:
    status: int
    content_type: str
    body: bytes
    latency_ms: float
    error: str = ""  # the AWS error code when status is not 200


class ConsoleBackend(Protocol):
    logs_dir: Path
    audit_path: Path | None  # the audit log, when credentials are configured
    secured: bool  # credentials configured: pages need a logged-in key

    async def call(self, scope: Scope, prefix: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """A control-plane operation (prefix "SageMaker", "AnyScaleFrontendService", ...); ApiError on refusal."""
        ...

    async def invoke(self, scope: Scope, endpoint: str, body: bytes, content_type: str, accept: str) -> InvokeAnswer:
        """InvokeEndpoint as the runtime route answers it."""
        ...

    def login(self, access_key: str, secret_key: str) -> str | None:
        """A session cookie value for a matching key, else None."""
        ...

    def who(self, scope: Scope) -> str | None:
        """The name of the verified key behind the request (None: anonymous)."""
        ...

    def operations(self) -> set[str]:
        """The SageMaker operations the control plane serves (pages for processing jobs etc. appear with them)."""
        ...
