"""Serverless scaling on the control loop's passes: idle serverless variants (and Lambda functions)
go back to their ProvisionedConcurrency — zero processes by default — after
MODELHOST_SERVERLESS_IDLE_SECONDS. Scale-out happens on the request path (hosting/serverless/gate.py)."""

from __future__ import annotations

from modelhost.hosting.serverless import ServerlessBackend
from modelhost.resources.endpoint import EndpointRecord


class ServerlessScaler:
    def __init__(self, backend: ServerlessBackend) -> None:
        self.backend = backend

    async def on_pass(self, _records: list[EndpointRecord]) -> None:
        await self.backend.sweep()
