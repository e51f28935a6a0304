"""Lambda API operations (CreateFunction, GetFunction, ..., concurrency, tags, Event invocations).

They record desired state and return; the control loop (controllers/functions.py) deploys a
function's code and moves ``State`` Pending -> Active and ``LastUpdateStatus`` InProgress ->
Successful, which is what botocore's ``function_active_v2`` / ``function_updated_v2`` waiters poll.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from sqlalchemy import delete, select

from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import LambdaError
from modelhost.resources import functions as rules
from modelhost.resources.functions import State, UpdateStatus
from modelhost.store import tables
from modelhost.store.blobs import BlobNotFound, S3Uri
from modelhost.store.function_code import CodeError, FunctionCode

CONFIG_KEYS = ("Runtime", "Role", "Handler", "Description", "Timeout", "MemorySize", "Environment")
MAX_LIST = 50


def code_store(ctx: ControlContext) -> FunctionCode:
    return FunctionCode(ctx.settings.data_dir / "lambda")


def function_arn(ctx: ControlContext, name: str) -> str:
    return f"arn:aws:lambda:{ctx.settings.region}:{ctx.settings.account_id}:function:{name}"


def function_name(ref: str) -> str:
    """A FunctionName member may be a name, a partial ARN or an ARN."""
    if ref.startswith("arn:"):
        return ref.split(":")[6]
    if ":function:" in ref:
        return ref.split(":function:")[1].split(":")[0]
    return ref.split(":")[0]


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}+0000"


def _row(ctx: ControlContext, conn: Any, ref: str) -> dict[str, Any]:
    name = function_name(ref)
    row = ctx.store.get(conn, tables.lambda_functions, name)
    if row is None:
        raise LambdaError.not_found(f"Function not found: {function_arn(ctx, name)}")
    return row


def get_row(ctx: ControlContext, ref: str) -> dict[str, Any]:
    with ctx.store.begin() as conn:
        return _row(ctx, conn, ref)


def _check(req: Request) -> None:
    if (reason := rules.config_refusal(req)) is not None:
        raise LambdaError.validation(reason)
    if (reason := rules.parameter_refusal(req)) is not None:
        raise LambdaError.invalid(reason)


def _code(ctx: ControlContext, code: dict[str, Any]) -> tuple[str, int]:
    if code.get("ImageUri"):
        raise LambdaError.invalid(
            "PackageType Image is not supported by modelhost (it has no container engine): upload your code as "
            "a .zip file (PackageType Zip with Code.ZipFile or Code.S3Bucket/S3Key)."
        )
    data = code.get("ZipFile")
    if data is None and code.get("S3Bucket") and code.get("S3Key"):
        uri = str(S3Uri(code["S3Bucket"], code["S3Key"]))
        try:
            reader = ctx.blobs.open(uri)
        except BlobNotFound:
            raise LambdaError.invalid(
                f"Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key "
                f"does not exist. ({uri})"
            ) from None
        try:
            chunks = []
            while chunk := reader.read(1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        finally:
            reader.close()
    if not data:
        raise LambdaError.invalid("Please provide a source for function code (Code.ZipFile or Code.S3Bucket/S3Key).")
    try:
        return code_store(ctx).save(data)
    except CodeError as exc:
        raise LambdaError.invalid(str(exc)) from None


def configuration(row: dict[str, Any]) -> dict[str, Any]:
    spec = row["spec"]
    out = {
        "FunctionName": row["name"],
        "FunctionArn": row["arn"],
        **{k: spec[k] for k in CONFIG_KEYS if k in spec},
        "CodeSize": spec["CodeSize"],
        "CodeSha256": spec["CodeSha256"],
        "LastModified": spec["LastModified"],
        "Version": rules.VERSION,
        "RevisionId": spec["RevisionId"],
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "TracingConfig": {"Mode": "PassThrough"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": rules.log_group(row["name"])},
        "State": spec["State"],
        "LastUpdateStatus": spec["LastUpdateStatus"],
    }
    for key in ("StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
        if spec.get(key):
            out[key] = spec[key]
    return out


def create_function(ctx: ControlContext, req: Request) -> Response:
    _check(req)
    if req.get("PackageType") == "Image":
        _code(ctx, {"ImageUri": "image"})
    if not req.get("Handler") or not req.get("Runtime"):
        raise LambdaError.invalid("Runtime and Handler are mandatory parameters for functions created with Zip.")
    name = req["FunctionName"]
    if name.startswith("arn:") or ":" in name:
        name = function_name(name)
    sha, size = _code(ctx, req.get("Code") or {})
    spec = {k: req[k] for k in CONFIG_KEYS if k in req}
    spec.setdefault("MemorySize", rules.DEFAULT_MEMORY)
    spec.setdefault("Timeout", rules.DEFAULT_TIMEOUT)
    spec.setdefault("Description", "")
    spec.update(
        CodeSha256=sha,
        CodeSize=size,
        LastModified=_stamp(),
        RevisionId=str(uuid.uuid4()),
        State=State.PENDING,
        StateReason="The function is being created.",
        StateReasonCode="Creating",
        LastUpdateStatus=UpdateStatus.SUCCESSFUL,
    )
    row = {
        "name_key": name.lower(),
        "name": name,
        "arn": function_arn(ctx, name),
        "creation_time": ctx.now(),
        "spec": spec,
        "reserved_concurrency": None,
    }
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.lambda_functions, name) is not None:
            raise LambdaError.conflict(f"Function already exist: {name}")
        ctx.store.insert(conn, tables.lambda_functions, row)
        _save_tags(conn, row["arn"], req.get("Tags") or {})
    ctx.wake()
    return configuration(row)


def _save_tags(conn: Any, arn: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        conn.execute(delete(tables.tags).where(tables.tags.c.resource_arn == arn, tables.tags.c.key == key))
        conn.execute(tables.tags.insert().values(resource_arn=arn, key=key, value=value))


def _tags(conn: Any, arn: str) -> dict[str, str]:
    rows = conn.execute(select(tables.tags.c.key, tables.tags.c.value).where(tables.tags.c.resource_arn == arn))
    return {k: v for k, v in rows}


def get_function(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, req["FunctionName"])
        tags = _tags(conn, row["arn"])
    out: dict[str, Any] = {
        "Configuration": configuration(row),
        "Code": {"RepositoryType": "S3", "Location": code_store(ctx).zip_path(row["spec"]["CodeSha256"]).as_uri()},
    }
    if tags:
        out["Tags"] = tags
    if row.get("reserved_concurrency") is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": row["reserved_concurrency"]}
    return out


def get_function_configuration(ctx: ControlContext, req: Request) -> Response:
    return configuration(get_row(ctx, req["FunctionName"]))


def list_functions(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = sorted(ctx.store.all(conn, tables.lambda_functions), key=lambda r: r["name"])
    limit = min(int(req.get("MaxItems") or MAX_LIST), MAX_LIST)
    marker = req.get("Marker")
    if marker:
        try:
            after = base64.urlsafe_b64decode(marker.encode()).decode()
        except ValueError:
            raise LambdaError.invalid("Invalid Marker.") from None
        rows = [r for r in rows if r["name"] > after]
    page = rows[:limit]
    out: dict[str, Any] = {"Functions": [configuration(r) for r in page]}
    if len(rows) > limit:
        out["NextMarker"] = base64.urlsafe_b64encode(page[-1]["name"].encode()).decode()
    return out


def _update(ctx: ControlContext, ref: str, revision: str | None, **changes: Any) -> Response:
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, ref)
        spec = row["spec"]
        if revision is not None and revision != spec["RevisionId"]:
            raise LambdaError.precondition("The Revision Id provided does not match the latest Revision Id.")
        if spec["LastUpdateStatus"] == UpdateStatus.IN_PROGRESS or spec["State"] == State.PENDING:
            raise LambdaError.conflict(
                f"The operation cannot be performed at this time. An update is in progress for resource: {row['arn']}"
            )
        spec.update(changes)
        spec.update(
            LastModified=_stamp(),
            RevisionId=str(uuid.uuid4()),
            LastUpdateStatus=UpdateStatus.IN_PROGRESS,
            LastUpdateStatusReason="The function is being updated.",
            LastUpdateStatusReasonCode="Updating",
        )
        ctx.store.update(conn, tables.lambda_functions, row["name"], {"spec": spec})
    ctx.wake()
    return configuration(row)


def update_function_code(ctx: ControlContext, req: Request) -> Response:
    sha, size = _code(ctx, {k: req[k] for k in ("ZipFile", "S3Bucket", "S3Key", "ImageUri") if k in req})
    return _update(ctx, req["FunctionName"], req.get("RevisionId"), CodeSha256=sha, CodeSize=size)


def update_function_configuration(ctx: ControlContext, req: Request) -> Response:
    _check(req)
    changes = {k: req[k] for k in CONFIG_KEYS if k in req}
    return _update(ctx, req["FunctionName"], req.get("RevisionId"), **changes)


def delete_function(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, req["FunctionName"])
        ctx.store.delete(conn, tables.lambda_functions, row["name"])
        conn.execute(delete(tables.tags).where(tables.tags.c.resource_arn == row["arn"]))
    ctx.wake()
    return {}


def put_function_concurrency(ctx: ControlContext, req: Request) -> Response:
    value = int(req["ReservedConcurrentExecutions"])
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, req["FunctionName"])
        ctx.store.update(conn, tables.lambda_functions, row["name"], {"reserved_concurrency": value})
    ctx.wake()
    return {"ReservedConcurrentExecutions": value}


def get_function_concurrency(ctx: ControlContext, req: Request) -> Response:
    row = get_row(ctx, req["FunctionName"])
    value = row.get("reserved_concurrency")
    return {} if value is None else {"ReservedConcurrentExecutions": value}


def delete_function_concurrency(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, req["FunctionName"])
        ctx.store.update(conn, tables.lambda_functions, row["name"], {"reserved_concurrency": None})
    ctx.wake()
    return {}


def _by_arn(ctx: ControlContext, conn: Any, arn: str) -> dict[str, Any]:
    return _row(ctx, conn, arn)


def tag_resource(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _by_arn(ctx, conn, req["Resource"])
        _save_tags(conn, row["arn"], req.get("Tags") or {})
    return {}


def untag_resource(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _by_arn(ctx, conn, req["Resource"])
        for key in req.get("TagKeys") or []:
            conn.execute(delete(tables.tags).where(tables.tags.c.resource_arn == row["arn"], tables.tags.c.key == key))
    return {}


def list_tags(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        row = _by_arn(ctx, conn, req["Resource"])
        return {"Tags": _tags(conn, row["arn"])}


def queue_event(ctx: ControlContext, ref: str, payload: bytes, request_id: str) -> None:
    """InvocationType Event: written down before the 202; the control loop runs it once."""
    with ctx.store.begin() as conn:
        row = _row(ctx, conn, ref)
        conn.execute(
            tables.lambda_events.insert().values(
                request_id=request_id,
                function=row["name"],
                status="Pending",
                received_time=time.time(),
                attempts=0,
                payload=payload.decode("utf-8"),
            )
        )
    ctx.wake()


OPERATIONS = {
    "CreateFunction": create_function,
    "GetFunction": get_function,
    "GetFunctionConfiguration": get_function_configuration,
    "ListFunctions": list_functions,
    "UpdateFunctionCode": update_function_code,
    "UpdateFunctionConfiguration": update_function_configuration,
    "DeleteFunction": delete_function,
    "PutFunctionConcurrency": put_function_concurrency,
    "GetFunctionConcurrency": get_function_concurrency,
    "DeleteFunctionConcurrency": delete_function_concurrency,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTags": list_tags,
}
