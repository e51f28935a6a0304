"""The console's routes (all under /console): pages, actions (POST, then a redirect back), the
login, one server-sent-events stream per page, and the packaged static files."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from modelhost.console import actions
from modelhost.console.backend import ConsoleBackend, Scope
from modelhost.console.charts import endpoint_charts
from modelhost.console.pages import Pages, read_from, tail
from modelhost.console.series import MetricsHistory
from modelhost.errors import ApiError
from modelhost.security.sessions import COOKIE, LIFETIME

HERE = Path(__file__).parent
PREFIX = "/console"
LIVE_INTERVAL = 2.0  # seconds between the stream's updates
FAILED_LOGIN_DELAY = 0.5
OPTIONAL_PAGES = (  # pages that appear when the control plane serves their operation (issue 13's resources)
    ("processing-jobs", "Processing jobs", "ListProcessingJobs", "ProcessingJobSummaries"),
    ("monitoring-schedules", "Monitoring schedules", "ListMonitoringSchedules", "MonitoringScheduleSummaries"),
)
Handler = Callable[[Request], Awaitable[Response]]


def fmt_time(value: Any) -> str:
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
    return "" if value is None else str(value)


class Console:
    def __init__(self, backend: ConsoleBackend, history: MetricsHistory | None = None) -> None:
        self.backend = backend
        self.pages = Pages(backend)
        self.history = history or MetricsHistory()
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
        self.env.filters["time"] = fmt_time
        self.env.filters["q"] = lambda v: quote(str(v), safe="")
        page = self._page
        self.app = Starlette(
            routes=[
                Route(PREFIX, self.home),
                Route(PREFIX + "/", self.home),
                Route(PREFIX + "/login", self.login_form, methods=["GET"]),
                Route(PREFIX + "/login", self.login, methods=["POST"]),
                Route(PREFIX + "/logout", self.logout, methods=["POST"]),
                Route(PREFIX + "/endpoints", page(self.endpoints)),
                Route(PREFIX + "/endpoints/{name}", page(self.endpoint)),
                Route(PREFIX + "/endpoints/{name}/delete", page(self.delete_endpoint), methods=["POST"]),
                Route(PREFIX + "/endpoints/{name}/capacity", page(self.update_capacity), methods=["POST"]),
                Route(PREFIX + "/endpoints/{name}/invoke", page(self.invoke), methods=["POST"]),
                Route(PREFIX + "/models", page(self.models)),
                Route(PREFIX + "/transform-jobs", page(self.transform_jobs)),
                Route(PREFIX + "/transform-jobs/{name}", page(self.transform_job)),
                Route(PREFIX + "/transform-jobs/{name}/stop", page(self.stop_transform_job), methods=["POST"]),
                Route(PREFIX + "/async", page(self.async_queues)),
                Route(PREFIX + "/audit", page(self.audit)),
                Route(PREFIX + "/more/{kind}", page(self.optional)),
                Route(PREFIX + "/events/{page:path}", page(self.events)),
                Mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="static"),
            ]
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.history.start()  # the 15-minute window starts with the console's first request
        await self.app(scope, receive, send)

    # --- rendering ---

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        nav = [("endpoints", "Endpoints"), ("models", "Models & configs"), ("transform-jobs", "Transform jobs")]
        nav.append(("async", "Async queues"))
        operations = self.backend.operations()
        nav += [(f"more/{slug}", label) for slug, label, op, _ in OPTIONAL_PAGES if op in operations]
        if self.backend.audit_path is not None:
            nav.append(("audit", "Audit log"))
        html = self.env.get_template(template).render(
            prefix=PREFIX,
            nav=nav,
            user=self.backend.who(request.scope),
            secured=self.backend.secured,
            message=request.query_params.get("message", ""),
            error=request.query_params.get("error", ""),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def fragment(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(prefix=PREFIX, **context)

    def _page(self, handler: Handler) -> Handler:
        """Login required when credentials are configured; control-plane errors shown as a page."""

        async def guarded(request: Request) -> Response:
            if self.backend.secured and self.backend.who(request.scope) is None:
                if request.method == "GET" and not request.url.path.startswith(PREFIX + "/events"):
                    return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': request.url.path})}", 303)
                return JSONResponse({"message": "Log in to the console first."}, status_code=401)
            try:
                return await handler(request)
            except ApiError as err:
                return self.render(request, "error.html", status=err.status, code=err.code, detail=err.message)

        return guarded

    # --- login ---

    async def home(self, request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/endpoints", 303)

    async def login_form(self, request: Request) -> Response:
        if not self.backend.secured:
            return RedirectResponse(f"{PREFIX}/endpoints", 303)
        return self.render(request, "login.html", next=_safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        form = await actions.read_form(request)
        cookie = self.backend.login(str(form.get("access_key", "")), str(form.get("secret_key", "")))
        target = _safe_next(str(form.get("next", "")))
        if cookie is None:
            await asyncio.sleep(FAILED_LOGIN_DELAY)  # slows guessing down; the event loop stays free
            return self.render(request, "login.html", status=401, next=target, failed=True)
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, cookie, max_age=LIFETIME, path=PREFIX, httponly=True, samesite="strict")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # --- pages ---

    async def endpoints(self, request: Request) -> Response:
        rows = await self.pages.endpoints(request.scope)
        return self.render(request, "endpoints.html", rows=rows, events=f"{PREFIX}/events/endpoints")

    async def endpoint_live(self, scope: Scope, name: str, row: dict[str, Any] | None = None) -> dict[str, str]:
        row = row or await self.pages.endpoint(scope, name)
        return {
            "endpoint-status": self.fragment("_endpoint_status.html", row=row),
            "endpoint-variants": self.fragment("_endpoint_variants.html", row=row),
            "endpoint-charts": endpoint_charts(self.history.series(name)),
        }

    async def endpoint(self, request: Request) -> Response:
        return await self.endpoint_page(request, request.path_params["name"])

    async def endpoint_page(self, request: Request, name: str, result: dict[str, Any] | None = None) -> Response:
        row = await self.pages.endpoint(request.scope, name)
        log, offset = tail(self.backend.logs_dir / "endpoints" / f"{name}.log")
        return self.render(
            request,
            "endpoint.html",
            row=row,
            live=await self.endpoint_live(request.scope, name, row),
            log=log,
            events=f"{PREFIX}/events/endpoints/{quote(name, safe='')}?log={offset}",
            result=result,
            form=result.get("form") if result else None,
        )

    async def models(self, request: Request) -> Response:
        return self.render(request, "models.html", **await self.pages.models(request.scope))

    async def transform_jobs(self, request: Request) -> Response:
        jobs = await self.pages.transform_jobs(request.scope)
        return self.render(request, "jobs.html", jobs=jobs, events=f"{PREFIX}/events/transform-jobs")

    async def transform_job(self, request: Request) -> Response:
        name = request.path_params["name"]
        job = await self.pages.transform_job(request.scope, name)
        log, offset = tail(self.backend.logs_dir / "transform-jobs" / f"{name}.log")
        return self.render(
            request,
            "job.html",
            job=job,
            live=self.fragment("_job_live.html", job=job),
            log=log,
            events=f"{PREFIX}/events/transform-jobs/{quote(name, safe='')}?log={offset}",
        )

    async def async_queues(self, request: Request) -> Response:
        queues = await self.pages.async_queues(request.scope)
        return self.render(request, "async.html", queues=queues, events=f"{PREFIX}/events/async")

    async def audit(self, request: Request) -> Response:
        if self.backend.audit_path is None:
            return self.render(
                request, "error.html", status=404, code="NotFound", detail="No audit log: credentials are off."
            )
        return self.render(request, "audit.html", entries=self.pages.audit())

    async def optional(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        found = next((p for p in OPTIONAL_PAGES if p[0] == kind and p[2] in self.backend.operations()), None)
        if found is None:
            return self.render(request, "error.html", status=404, code="NotFound", detail=f"No {kind} here.")
        _, label, operation, key = found
        items = await self.pages.listing(request.scope, operation, key)
        return self.render(request, "listing.html", title=label, items=items)

    # --- actions (the control plane's operations, then back to the page) ---

    async def delete_endpoint(self, request: Request) -> Response:
        return await actions.delete_endpoint(self.backend, request)

    async def update_capacity(self, request: Request) -> Response:
        return await actions.update_capacity(self.backend, request)

    async def stop_transform_job(self, request: Request) -> Response:
        return await actions.stop_transform_job(self.backend, request)

    async def invoke(self, request: Request) -> Response:
        """JSON for the page's script; without JavaScript, the endpoint page again with the answer."""
        result = await actions.invoke(self.backend, request)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({k: v for k, v in result.items() if k != "form"})
        return await self.endpoint_page(request, request.path_params["name"], result)

    # --- the live stream ---

    async def events(self, request: Request) -> Response:
        page = request.path_params["page"]
        scope = request.scope
        log_offset = int(request.query_params.get("log", "0") or 0)

        async def update() -> dict[str, Any]:
            nonlocal log_offset
            replace: dict[str, str] = {}
            append: dict[str, str] = {}
            if page == "endpoints":
                rows = await self.pages.endpoints(scope)
                replace["endpoints-table"] = self.fragment("_endpoints_table.html", rows=rows)
            elif page.startswith("endpoints/"):
                name = page.removeprefix("endpoints/")
                replace.update(await self.endpoint_live(scope, name))
                text, log_offset = read_from(self.backend.logs_dir / "endpoints" / f"{name}.log", log_offset)
                append["log"] = text
            elif page == "transform-jobs":
                jobs = await self.pages.transform_jobs(scope)
                replace["jobs-table"] = self.fragment("_jobs_table.html", jobs=jobs)
            elif page.startswith("transform-jobs/"):
                name = page.removeprefix("transform-jobs/")
                job = await self.pages.transform_job(scope, name)
                replace["job-live"] = self.fragment("_job_live.html", job=job)
                text, log_offset = read_from(self.backend.logs_dir / "transform-jobs" / f"{name}.log", log_offset)
                append["log"] = text
            elif page == "async":
                queues = await self.pages.async_queues(scope)
                replace["async-table"] = self.fragment("_async_table.html", queues=queues)
            return {"replace": replace, "append": {k: v for k, v in append.items() if v}}

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            while not await request.is_disconnected():
                try:
                    data = await update()
                except ApiError as err:
                    data = {"error": f"{err.code}: {err.message}"}
                yield f"data: {json.dumps(data)}\n\n".encode()
                await asyncio.sleep(LIVE_INTERVAL)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _safe_next(value: str | None) -> str:
    """Only a path inside the console (no open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/endpoints"
