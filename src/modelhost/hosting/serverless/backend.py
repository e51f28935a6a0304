"""A Backend that makes serverless fleets: any backend's fleet, started with ProvisionedConcurrency
instances (none by default), behind the serverless gate. It keeps the gates it made so the control
loop can scale idle ones in (``sweep``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from modelhost.backends.handle import Backend, FleetHandle, FleetRequest
from modelhost.hosting.serverless.gate import ServerlessFleet
from modelhost.resources.serverless import COLD_START_LIMIT, MAX_PAYLOAD

log = logging.getLogger("modelhost.serverless")


class ServerlessBackend:
    def __init__(self, inner: Backend, *, idle_seconds: float, cold_start_limit: float = COLD_START_LIMIT) -> None:
        self.inner = inner
        self.idle_seconds = idle_seconds
        self.cold_start_limit = cold_start_limit
        self.gates: list[ServerlessFleet] = []
        self._sweeping: dict[int, asyncio.Task[None]] = {}

    async def create_fleet(self, request: FleetRequest) -> FleetHandle:
        if request.serverless is None:
            return await self.inner.create_fleet(request)
        return await self.create_serverless(request, max_payload=MAX_PAYLOAD)

    async def create_serverless(
        self, request: FleetRequest, *, max_payload: int | None, log_stream_arn: str = "", reserved: bool = True
    ) -> ServerlessFleet:
        config = request.serverless
        assert config is not None
        inner = await self.inner.create_fleet(
            replace(request, count=config.provisioned, startup_timeout=self.cold_start_limit)
        )
        gate = ServerlessFleet(
            inner,
            request.owner,
            config,
            max_payload=max_payload,
            cold_start_limit=self.cold_start_limit,
            log_stream_arn=log_stream_arn,
            reserved=reserved,
        )
        self.gates.append(gate)
        return gate

    async def sweep(self) -> None:
        """One control-loop pass: scale every idle gate back to its provisioned count (in the
        background: draining never holds up the loop)."""
        self.gates = [g for g in self.gates if not g.stopped]
        for gate in self.gates:
            key = id(gate)
            task = self._sweeping.get(key)
            if task is not None and not task.done():
                continue
            self._sweeping[key] = asyncio.get_running_loop().create_task(self._scale_idle(gate))
        live = {id(g) for g in self.gates}
        self._sweeping = {k: t for k, t in self._sweeping.items() if k in live or not t.done()}

    async def _scale_idle(self, gate: ServerlessFleet) -> None:
        try:
            await gate.scale_idle(self.idle_seconds)
        except Exception:
            log.exception("scaling idle serverless variant %s of %s failed", gate.variant, gate.owner)

    async def close(self) -> None:
        for task in self._sweeping.values():
            task.cancel()
        await asyncio.gather(*self._sweeping.values(), return_exceptions=True)
        await self.inner.close()
