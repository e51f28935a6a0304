"""An inference pipeline replica on this machine: one process per container, started together and
healthy only when all are; the fleet sees it as one instance.

Its ``client`` speaks for the whole replica (``POST /invocations`` runs the chain of
backends/chain.py, ``GET /ping`` pings every container, anything else goes to the first container),
so the fleet, the router, batch transform and the async dispatcher use it like any instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from modelhost.backends.chain import FAILED_CONTAINER, HopResponse, direct_target, hop_headers, run_chain
from modelhost.backends.local.http import ConnectError, HttpResponse, StreamedResponse, stream_request
from modelhost.backends.local.instances import Instance, InstanceFailed, InstanceSpec
from modelhost.resources.containers import ExecutionMode, ModelDefinition
from modelhost.store.logs import EndpointLog

INTERMEDIATE_LIMIT = 1024**3  # an async request's intermediate answers are held in memory, up to this


@dataclass
class PipelineSpec(InstanceSpec):
    """The replica's containers (each a full InstanceSpec) and how requests flow through them."""

    containers: list[tuple[str, InstanceSpec]] = field(default_factory=list)  # (hostname, spec)
    mode: ExecutionMode = ExecutionMode.SERIAL

    def instance(self, index: int, run_dir: Path, log: EndpointLog) -> Instance:
        return PipelineInstance(self, index, run_dir, log)


class _Processes:
    """The replica's processes seen as one by the fleet's supervisor: when one exits, the others are
    stopped too and the replica restarts as a whole."""

    def __init__(self, members: list[Instance]) -> None:
        self.members = members

    @property
    def pid(self) -> int | None:
        return self.members[0].pid

    @property
    def returncode(self) -> int | None:
        for m in self.members:
            if m.proc is not None and m.proc.returncode is not None:
                return m.proc.returncode
        return None

    async def wait(self) -> int:
        waits = [asyncio.ensure_future(m.proc.wait()) for m in self.members if m.proc is not None]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for m in self.members:
            m.kill()
        await asyncio.gather(*(m.proc.wait() for m in self.members if m.proc is not None), return_exceptions=True)
        return next(iter(done)).result()


class PipelineInstance(Instance):
    def __init__(self, spec: PipelineSpec, index: int, run_dir: Path, log: EndpointLog) -> None:
        super().__init__(spec, index, run_dir, log)
        self.pipeline = spec
        self.hostnames = [host for host, _ in spec.containers]
        self.members = [Instance(s, index, run_dir, log) for _, s in spec.containers]
        for host, member in zip(self.hostnames, self.members, strict=True):
            member.name = f"{self.name}/{host}"

    @property
    def pid(self) -> int | None:
        return self.members[0].pid

    async def start(self) -> None:
        results = await asyncio.gather(*(m.start() for m in self.members), return_exceptions=True)
        for host, result in zip(self.hostnames, results, strict=True):
            if isinstance(result, BaseException):
                await asyncio.gather(*(m.stop(0) for m in self.members), return_exceptions=True)
                if isinstance(result, InstanceFailed):
                    raise InstanceFailed(f"Container {host}: {result}"[:1000]) from None
                raise result
        self.proc = cast(asyncio.subprocess.Process, _Processes(self.members))
        self.client = PipelineClient(self)  # type: ignore[assignment]  # the replica's client, not a pool
        self.healthy = True

    async def ping(self) -> bool:
        results = await asyncio.gather(*(m.ping() for m in self.members))
        return all(results)

    def kill(self) -> None:
        self.healthy = False
        for m in self.members:
            m.kill()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        self.stopping = True
        self.healthy = False
        deadline = asyncio.get_running_loop().time() + drain_timeout
        while self.outstanding and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(m.stop(0) for m in self.members), return_exceptions=True)
        self.log.write(self.name, "pipeline instance stopped")

    async def send_to(self, index: int, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> HopResponse:
        client = self.members[index].client
        if client is None:
            raise ConnectError(f"container {self.hostnames[index]} is not running")
        resp = await client.request(b"POST", b"/invocations", headers, body, timeout)
        return HopResponse(resp.status, resp.headers, resp.body)

    async def invoke_stream(
        self, headers: list[tuple[bytes, bytes]], size: int, chunks: AsyncIterator[bytes]
    ) -> StreamedResponse:
        """The chain with a streamed first request and last response (async inference)."""
        if self.pipeline.mode is ExecutionMode.DIRECT:
            index = direct_target(headers, self.hostnames)
            order = [index if index is not None else 0]
        else:
            order = list(range(len(self.members)))
        content_type = next((v for n, v in headers if n == b"content-type"), None)
        body_iter, length = chunks, size
        for position, index in enumerate(order):
            last = position == len(order) - 1
            path = str(self.members[index].socket_path)
            hop = hop_headers(headers, content_type, last)
            resp = await stream_request(path, b"POST", b"/invocations", hop, length, body_iter)
            if resp.status >= 300:
                resp.headers[FAILED_CONTAINER] = self.hostnames[index].encode("latin-1")
                return resp
            if last:
                return resp
            try:
                body = await resp.read_all(INTERMEDIATE_LIMIT)
            finally:
                resp.close()
            content_type = resp.headers.get(b"content-type", content_type)
            body_iter, length = _one(body), len(body)
        raise AssertionError("unreachable: a pipeline has at least one container")


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


class PipelineClient:
    """The replica's client: what UnixHttpPool is for a single-container instance."""

    def __init__(self, replica: PipelineInstance) -> None:
        self.replica = replica

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> HttpResponse:
        replica = self.replica
        if method == b"POST" and target == b"/invocations":
            result = await run_chain(replica.pipeline.mode, replica.hostnames, replica.send_to, headers, body, timeout)
            resp = result.annotated()
            return HttpResponse(resp.status, resp.headers, resp.body)
        if target == b"/ping":
            return HttpResponse(200 if await replica.ping() else 503, {}, b"")
        first = replica.members[0].client
        if first is None:
            raise ConnectError("the pipeline's first container is not running")
        return await first.request(method, target, headers, body, timeout)

    async def close(self) -> None:
        """Nothing of its own to close: each container's pool is closed when that container stops."""


def pipeline_spec(specs: list[InstanceSpec], definition: ModelDefinition) -> PipelineSpec:
    """One replica of the pipeline: the containers' specs under the first one's identity."""
    first = specs[0]
    return PipelineSpec(
        endpoint=first.endpoint,
        variant=first.variant,
        model_dir=first.model_dir,
        runtime=first.runtime,
        environment=first.environment,
        # started together: the replica is healthy when its slowest container is
        startup_timeout=max(s.startup_timeout for s in specs),
        stop_grace=first.stop_grace,
        python=first.python,
        user=first.user,
        containers=list(zip(definition.hostnames, specs, strict=True)),
        mode=definition.execution_mode,
    )
