"""Lambda functions on the control loop's passes: deploy what the functions table says (code
extracted once, a serverless fleet of Lambda-runtime instances, routed by the FunctionInvoker),
move State / LastUpdateStatus, apply reserved concurrency, retire deleted functions, and run the
queued Event invocations once each (after a restart, the ones caught running run again)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from modelhost.backends.handle import DeploymentFailed, FleetRequest, ReplicaFailed
from modelhost.config import Settings
from modelhost.hosting.errors import HostingError, Throttled
from modelhost.hosting.functions import FunctionInvoker, FunctionRoute
from modelhost.hosting.serverless import ServerlessBackend, ServerlessFleet
from modelhost.resources import functions as rules
from modelhost.resources.endpoint import EndpointRecord
from modelhost.resources.functions import FunctionSpec, State, UpdateStatus
from modelhost.resources.serverless import ServerlessConfig
from modelhost.store import tables
from modelhost.store.db import MetadataStore
from modelhost.store.function_code import CodeError, FunctionCode
from modelhost.store.logs import FunctionLog

log = logging.getLogger("modelhost.functions")
EVENT_BATCH = 32


class FunctionController:
    def __init__(
        self, settings: Settings, store: MetadataStore, backend: ServerlessBackend, invoker: FunctionInvoker
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.invoker = invoker
        self.code = FunctionCode(settings.data_dir / "lambda")
        self.logs: dict[str, FunctionLog] = {}
        self.busy: dict[str, asyncio.Task[None]] = {}
        self.events: set[asyncio.Task[None]] = set()
        self._recovered = False
        self.failed: dict[str, tuple[object, ...]] = {}  # function -> the revision whose deployment failed

    def log(self, name: str) -> FunctionLog:
        if name not in self.logs:
            self.logs[name] = FunctionLog(self.settings.logs_dir, name)
        return self.logs[name]

    # --- one pass

    async def on_pass(self, _records: list[EndpointRecord]) -> None:
        rows = await asyncio.to_thread(self._load)
        present = {r["name"].lower() for r in rows}
        for key in [k for k in self.invoker.routes if k not in present]:
            route = self.invoker.withdraw(key)
            if route is not None:
                asyncio.get_running_loop().create_task(route.fleet.stop(drain_timeout=self.settings.stop_grace))
        for row in rows:
            name = row["name"]
            if name.lower() in self.busy:
                continue
            spec = FunctionSpec.from_row(row)
            route = self.invoker.routes.get(name.lower())
            if route is None or route.revision != spec.revision or not self.invoker.live(name):  # (re-created)
                if self.failed.get(name.lower()) == spec.revision and not self._pending(row):
                    continue
                task = asyncio.get_running_loop().create_task(self._deploy(row, spec, route))
                self.busy[name.lower()] = task
                task.add_done_callback(self._done_callback(name.lower()))
            elif (
                isinstance(route.fleet, ServerlessFleet) and route.fleet.config.max_concurrency != spec.max_concurrency
            ):
                route.fleet.set_max_concurrency(spec.max_concurrency, spec.reserved_concurrency is not None)
        await self._dispatch_events()

    def _done_callback(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self.busy.pop(key, None)

        return done

    @staticmethod
    def _pending(row: dict[str, Any]) -> bool:
        spec = row["spec"]
        return bool(spec["State"] == State.PENDING or spec["LastUpdateStatus"] == UpdateStatus.IN_PROGRESS)

    def _load(self) -> list[dict[str, Any]]:
        with self.store.begin() as conn:
            if not self._recovered:  # Event invocations a previous run was running: run them again
                conn.execute(
                    update(tables.lambda_events)
                    .where(tables.lambda_events.c.status == "InProgress")
                    .values(status="Pending")
                )
                self._recovered = True
            return self.store.all(conn, tables.lambda_functions)

    # --- deploying

    def _environment(self, spec: FunctionSpec, row: dict[str, Any], task_root: str) -> dict[str, str]:
        s = self.settings
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
        day = time.strftime("%Y/%m/%d", time.gmtime())
        runtime = row["spec"].get("Runtime", "python3.12")
        return {
            **spec.variables,
            "_HANDLER": spec.handler,
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": task_root,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": rules.VERSION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": rules.log_group(spec.name),
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[{rules.VERSION}]{secrets.token_hex(16)}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": s.region,
            "AWS_DEFAULT_REGION": s.region,
            "TZ": ":UTC",
            # boto3 inside the function talks to this server (S3, SageMaker, Lambda, ...).
            "AWS_ENDPOINT_URL": f"http://{host}:{s.port}",
            "AWS_ACCESS_KEY_ID": s.lambda_access_key_id,
            "AWS_SECRET_ACCESS_KEY": s.lambda_secret_access_key,
            "MODELHOST_LAMBDA_FUNCTION_ARN": spec.arn,
        }

    async def _deploy(self, row: dict[str, Any], spec: FunctionSpec, old: FunctionRoute | None) -> None:
        flog = self.log(spec.name)
        try:
            task_root = await asyncio.to_thread(self.code.extracted, spec.code_sha)
            request = FleetRequest(
                owner=spec.name,
                variant=rules.VERSION,
                model={
                    "PrimaryContainer": {
                        "Image": rules.RUNTIME_IMAGE,
                        "Environment": self._environment(spec, row, str(task_root)),
                    }
                },
                count=0,
                log=flog,
                label=f"Function {spec.name}",
                serverless=ServerlessConfig(spec.memory_mb, spec.max_concurrency),
            )
            fleet = await self.backend.create_serverless(
                request, max_payload=None, reserved=spec.reserved_concurrency is not None
            )
            await fleet.start()
        except (CodeError, DeploymentFailed, ReplicaFailed, OSError) as exc:
            flog.write("platform", f"deployment failed: {exc}")
            self.failed[spec.name.lower()] = spec.revision
            await asyncio.to_thread(self._finish, spec.name, str(exc))
            return
        self.invoker.publish(FunctionRoute(spec.name, spec.arn, fleet, float(spec.timeout), spec.revision))
        if old is not None:  # requests in flight on the old code finish there
            await old.fleet.stop(drain_timeout=float(spec.timeout) + 1)
        flog.write("platform", f"function {spec.name} is Active (code {spec.code_sha})")
        await asyncio.to_thread(self._finish, spec.name, None)

    def _finish(self, name: str, failure: str | None) -> None:
        with self.store.begin() as conn:
            row = self.store.get(conn, tables.lambda_functions, name)
            if row is None:
                return
            spec = row["spec"]
            for key in ("StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
                spec.pop(key, None)
            if failure is None:
                spec.update(State=State.ACTIVE, LastUpdateStatus=UpdateStatus.SUCCESSFUL)
            elif spec["State"] == State.PENDING:
                spec.update(State=State.FAILED, StateReason=failure[:1000], StateReasonCode="InternalError")
            else:
                spec.update(
                    LastUpdateStatus=UpdateStatus.FAILED,
                    LastUpdateStatusReason=failure[:1000],
                    LastUpdateStatusReasonCode="InternalError",
                )
            self.store.update(conn, tables.lambda_functions, name, {"spec": spec})

    # --- Event invocations

    async def _dispatch_events(self) -> None:
        if len(self.events) >= EVENT_BATCH:
            return
        claimed = await asyncio.to_thread(self._claim_events, EVENT_BATCH - len(self.events))
        for seq, request_id, function, payload in claimed:
            task = asyncio.get_running_loop().create_task(self._run_event(seq, request_id, function, payload))
            self.events.add(task)
            task.add_done_callback(self.events.discard)

    def _claim_events(self, limit: int) -> list[tuple[int, str, str, str]]:
        t = tables.lambda_events
        ready = [k for k in self.invoker.routes if self.invoker.live(k)]
        with self.store.begin() as conn:
            rows = conn.execute(select(t).where(t.c.status == "Pending").order_by(t.c.seq).limit(limit)).all()
            out = []
            for r in rows:
                if r.function.lower() not in ready:
                    continue
                conn.execute(update(t).where(t.c.seq == r.seq).values(status="InProgress", attempts=r.attempts + 1))
                out.append((r.seq, r.request_id, r.function, r.payload))
            return out

    async def _run_event(self, seq: int, request_id: str, function: str, payload: str) -> None:
        try:
            result = await self.invoker.invoke(function, payload.encode(), request_id)
        except Throttled:
            await asyncio.to_thread(self._event_done, seq, "Pending", None)  # next pass tries again
            return
        except HostingError as exc:
            await asyncio.to_thread(self._event_done, seq, "Pending", None)
            log.info("event %s of %s waits: %s", request_id, function, exc)
            return
        text = result.payload.decode("utf-8", "replace")
        outcome = {"functionError": result.function_error, "payload": text}
        if result.function_error:
            self.log(function).write("platform", f"Event invocation {request_id} failed: {text[:500]}")
        await asyncio.to_thread(self._event_done, seq, "Failed" if result.function_error else "Completed", outcome)

    def _event_done(self, seq: int, status: str, outcome: dict[str, Any] | None) -> None:
        t = tables.lambda_events
        with self.store.begin() as conn:
            conn.execute(
                update(t).where(t.c.seq == seq).values(status=status, outcome=json.dumps(outcome) if outcome else None)
            )

    async def shutdown(self) -> None:
        for task in [*self.busy.values(), *self.events]:
            task.cancel()
        await asyncio.gather(*self.busy.values(), *self.events, return_exceptions=True)
        routes = list(self.invoker.routes.values())
        self.invoker.routes.clear()
        await asyncio.gather(*(r.fleet.stop(drain_timeout=5) for r in routes), return_exceptions=True)
        for flog in self.logs.values():
            flog.close()
