"""Invoking Lambda functions: name -> the function's serverless fleet (published by the control
loop, in memory like the router's table) -> one of its instances.

The instance's Lambda runtime answers every invocation 200 (a function error is marked by a
header); what the platform sees itself — a timeout (the instance is then replaced, as Lambda
discards a timed-out sandbox), an instance that died (memory limit, crash), a failed cold start —
becomes the same kind of function error, worded as Lambda words it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from modelhost.backends.handle import FleetHandle, ReplicaLost, ReplicaTimeout, ReplicaUnreachable
from modelhost.hosting.errors import ColdStartFailed, HostingError

UNHANDLED = "Unhandled"


class FunctionNotReady(HostingError):
    """The function exists but is not deployed (Pending, or the server is starting)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"function {name} is not ready")
        self.name = name


@dataclass
class FunctionRoute:
    name: str
    arn: str
    fleet: FleetHandle
    timeout: float
    revision: tuple[object, ...]


@dataclass
class FunctionResult:
    payload: bytes
    function_error: str | None = None
    log_result: str | None = None  # base64 of the log tail, as the instance sent it


def _error(message: str, error_type: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class FunctionInvoker:
    def __init__(self) -> None:
        self.routes: dict[str, FunctionRoute] = {}
        # Deleted (DeleteFunction has returned) but still routed until the control loop's next pass
        # withdraws the route and stops its fleet: never invoked meanwhile.
        self.retired: set[str] = set()

    def publish(self, route: FunctionRoute) -> None:
        self.routes[route.name.lower()] = route
        self.retired.discard(route.name.lower())

    def withdraw(self, name: str) -> FunctionRoute | None:
        self.retired.discard(name.lower())
        return self.routes.pop(name.lower(), None)

    def retire(self, name: str) -> None:
        if name.lower() in self.routes:
            self.retired.add(name.lower())

    def live(self, name: str) -> bool:
        """Whether ``name`` has a route that takes invocations."""
        key = name.lower()
        return key in self.routes and key not in self.retired

    async def invoke(
        self, name: str, payload: bytes, request_id: str, *, tail: bool = False, client_context: str | None = None
    ) -> FunctionResult:
        route = self.routes.get(name.lower())
        if route is None or name.lower() in self.retired:
            raise FunctionNotReady(name)
        fleet = route.fleet
        headers = [(b"content-type", b"application/json"), (b"x-amz-request-id", request_id.encode())]
        if client_context:
            headers.append((b"x-amz-client-context", client_context.encode("latin-1")))
        tries = 0
        while True:
            try:
                replica = fleet.acquire_now() or await fleet.acquire(0)  # Throttled propagates
            except ColdStartFailed as exc:
                return FunctionResult(
                    _error(f"RequestId: {request_id} Error: {exc.message}", "Runtime.Unknown"), UNHANDLED
                )
            if replica is None:
                raise FunctionNotReady(name)
            try:
                resp = await fleet.invoke(replica, headers, payload, route.timeout)
            except ReplicaUnreachable:
                fleet.mark_unreachable(replica)
                tries += 1
                if tries > fleet.size + 1:
                    raise FunctionNotReady(name) from None
                continue
            except ReplicaTimeout:
                fleet.recycle(replica)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
                message = f"{stamp} {request_id} Task timed out after {route.timeout:.2f} seconds"
                return FunctionResult(_error(message, "Sandbox.Timedout"), UNHANDLED)
            except ReplicaLost as exc:
                kind = "Runtime.OutOfMemory" if "memory limit" in str(exc) else "Runtime.ExitError"
                message = f"RequestId: {request_id} Error: Runtime exited: {exc}"
                return FunctionResult(_error(message, kind), UNHANDLED)
            finally:
                fleet.release(replica)
            error = resp.headers.get(b"x-amz-function-error")
            log = resp.headers.get(b"x-amz-log-result")
            return FunctionResult(
                resp.body,
                error.decode("latin-1") if error else None,
                log.decode("latin-1") if (tail and log) else None,
            )
