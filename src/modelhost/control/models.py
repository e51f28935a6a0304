"""CreateModel / DescribeModel / ListModels / DeleteModel."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.exc import IntegrityError

from modelhost.control import listing, tags
from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ValidationException
from modelhost.resources.containers import ContainerRuleViolation, check_model
from modelhost.store import tables
from modelhost.store.artifacts import location_refusal, submit_dir_refusal

# Members echoed by DescribeModel exactly as they were given.
ECHOED = (
    "PrimaryContainer",
    "Containers",
    "InferenceExecutionConfig",
    "ExecutionRoleArn",
    "VpcConfig",
    "EnableNetworkIsolation",
    "DeploymentRecommendation",
)
MAX_ENVIRONMENT_BYTES = 32 * 1024


def not_found(ctx: ControlContext, name: str) -> ValidationException:
    return ValidationException(f'Could not find model "{ctx.arn("model", name)}".')


def _check_locations(allowed: tuple[Path, ...], container: dict) -> None:
    """Local model locations (file:// and paths) only under the data dir and MODELHOST_ALLOWED_MODEL_DIRS."""
    s3 = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
    reasons = [
        location_refusal("ModelDataUrl", container.get("ModelDataUrl") or "", allowed),
        location_refusal("ModelDataSource.S3DataSource.S3Uri", s3.get("S3Uri") or "", allowed),
        submit_dir_refusal((container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY", ""), allowed),
    ]
    for reason in reasons:
        if reason is not None:
            raise ValidationException(reason)


def _check_containers(req: Request, allowed: tuple[Path, ...]) -> None:
    try:
        check_model(req)
    except ContainerRuleViolation as exc:
        raise ValidationException(str(exc)) from None
    containers = [req["PrimaryContainer"]] if "PrimaryContainer" in req else req["Containers"]
    total_env = 0
    for c in containers:
        env = c.get("Environment") or {}
        total_env += sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
        if c.get("ModelDataUrl") and c.get("ModelDataSource"):
            raise ValidationException("ModelDataUrl and ModelDataSource cannot both be specified for a container.")
        _check_locations(allowed, c)
    if total_env > MAX_ENVIRONMENT_BYTES:
        raise ValidationException(
            f"The total size of the environment variables of the model exceeds {MAX_ENVIRONMENT_BYTES} bytes."
        )


def create_model(ctx: ControlContext, req: Request) -> Response:
    _check_containers(req, ctx.settings.allowed_model_dirs)
    name = req["ModelName"]
    arn = ctx.arn("model", name)
    spec = {k: req[k] for k in ECHOED if k in req}
    with ctx.store.begin() as conn:
        if ctx.store.get(conn, tables.models, name) is not None:
            raise ValidationException(f'Cannot create already existing model "{arn}".')
        try:
            ctx.store.insert(
                conn,
                tables.models,
                {
                    "name_key": name.lower(),
                    "name": name,
                    "arn": arn,
                    "creation_time": ctx.now(),
                    "spec": spec,
                },
            )
        except IntegrityError:
            raise ValidationException(f'Cannot create already existing model "{arn}".') from None
        tags.save(conn, arn, req.get("Tags", []))
    return {"ModelArn": arn}


def get(ctx: ControlContext, name: str) -> dict:
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.models, name)
    if row is None:
        raise not_found(ctx, name)
    return row


def describe_model(ctx: ControlContext, req: Request) -> Response:
    row = get(ctx, req["ModelName"])
    return {
        "ModelName": row["name"],
        "ModelArn": row["arn"],
        "CreationTime": row["creation_time"],
        **row["spec"],
    }


def list_models(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        rows = ctx.store.all(conn, tables.models)
    rows = listing.filter_rows(rows, req)
    rows = listing.sort_rows(rows, req, {"Name": "name", "CreationTime": "creation_time"})
    return listing.paginate(
        rows,
        req,
        "Models",
        lambda r: {"ModelName": r["name"], "ModelArn": r["arn"], "CreationTime": r["creation_time"]},
    )


def delete_model(ctx: ControlContext, req: Request) -> Response:
    name = req["ModelName"]
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, tables.models, name)
        if row is None:
            raise not_found(ctx, name)
        ctx.store.delete(conn, tables.models, name)
        tags.drop_all(conn, row["arn"])
    return {}
