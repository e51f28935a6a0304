"""The console's actions: each is one control-plane operation (UpdateEndpointWeightsAndCapacities,
DeleteEndpoint, StopTransformJob) or InvokeEndpoint, run for the logged-in key, so its permissions
and the audit log apply. After the action the browser is sent back to the page (POST-redirect-GET)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from modelhost.console.backend import ConsoleBackend, InvokeAnswer
from modelhost.errors import ApiError, ValidationError

SM = "SageMaker"
MAX_BODY = 6 * 1024 * 1024


async def read_form(request: Request, limit: int = MAX_BODY + 64 * 1024) -> ImmutableMultiDict[str, str]:
    """An application/x-www-form-urlencoded body (the console's forms post nothing else), bounded."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValidationError(f"The form is over {limit} bytes.")
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def back(path: str, message: str = "", error: str = "") -> RedirectResponse:
    query = urlencode({k: v for k, v in (("message", message), ("error", error)) if v})
    return RedirectResponse(path + (f"?{query}" if query else ""), 303)


def _endpoint_path(name: str) -> str:
    return f"/console/endpoints/{quote(name, safe='')}"


async def delete_endpoint(backend: ConsoleBackend, request: Request) -> Response:
    name = request.path_params["name"]
    try:
        await backend.call(request.scope, SM, "DeleteEndpoint", {"EndpointName": name})
    except ApiError as err:
        return back(_endpoint_path(name), error=f"{err.code}: {err.message}")
    return back("/console/endpoints", message=f"Deleting endpoint {name}.")


def capacity_request(name: str, form: Any) -> dict[str, Any]:
    """UpdateEndpointWeightsAndCapacities from the form's ``weight:<variant>`` / ``count:<variant>`` fields
    (a blank field leaves that value as it is)."""
    wanted: dict[str, dict[str, Any]] = {}
    for field, raw in form.multi_items():
        kind, _, variant = str(field).partition(":")
        value = str(raw).strip()
        if kind not in ("weight", "count") or not variant or not value:
            continue
        entry = wanted.setdefault(variant, {"VariantName": variant})
        try:
            if kind == "weight":
                entry["DesiredWeight"] = float(value)
            else:
                entry["DesiredInstanceCount"] = int(value)
        except ValueError:
            label = "weight" if kind == "weight" else "instance count"
            raise ValidationError(f"The {label} of variant {variant} must be a number (got {value!r}).") from None
    return {"EndpointName": name, "DesiredWeightsAndCapacities": list(wanted.values())}


async def update_capacity(backend: ConsoleBackend, request: Request) -> Response:
    name = request.path_params["name"]
    path = _endpoint_path(name)
    form = await read_form(request)
    try:
        params = capacity_request(name, form)
        if not params["DesiredWeightsAndCapacities"]:
            return back(path, error="Nothing to change: enter a weight or an instance count.")
        await backend.call(request.scope, SM, "UpdateEndpointWeightsAndCapacities", params)
    except ApiError as err:
        return back(path, error=f"{err.code}: {err.message}")
    return back(path, message="Updating weights and capacities.")


async def stop_transform_job(backend: ConsoleBackend, request: Request) -> Response:
    name = request.path_params["name"]
    path = f"/console/transform-jobs/{quote(name, safe='')}"
    try:
        await backend.call(request.scope, SM, "StopTransformJob", {"TransformJobName": name})
    except ApiError as err:
        return back(path, error=f"{err.code}: {err.message}")
    return back(path, message=f"Stopping transform job {name}.")


def _shown(body: bytes) -> tuple[str, bool]:
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True


async def invoke(backend: ConsoleBackend, request: Request) -> dict[str, Any]:
    """The invoke panel: a body and content type to InvokeEndpoint; the answer and its latency."""
    name = request.path_params["name"]
    form = await read_form(request)
    body = str(form.get("body", "")).encode("utf-8")
    content_type = str(form.get("content_type", "") or "application/json")
    accept = str(form.get("accept", "") or "")
    if len(body) > MAX_BODY:
        result: dict[str, Any] = {"status": 413, "error": "ValidationError", "body": "Body over 6 MB.", "binary": False}
    else:
        try:
            answer = await backend.invoke(request.scope, name, body, content_type, accept)
        except ApiError as err:  # refused before the runtime (AccessDenied): shown like the runtime's errors
            answer = InvokeAnswer(err.status, "text/plain", err.message.encode(), 0.0, err.code)
        text, binary = _shown(answer.body)
        result = {
            "status": answer.status,
            "content_type": answer.content_type,
            "body": text,
            "binary": binary,
            "latency_ms": round(answer.latency_ms, 2),
            "error": answer.error,
        }
    result["form"] = {"body": body.decode("utf-8", "replace"), "content_type": content_type, "accept": accept}
    return result
