"""AddTags / ListTags / DeleteTags on any resource ARN this server knows."""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from modelhost.control.context import ControlContext, Request, Response
from modelhost.errors import ResourceLimitExceeded, ValidationException
from modelhost.store import tables

MAX_TAGS = 50


def save(conn: Connection, arn: str, tags: list[dict]) -> None:
    for tag in tags:
        conn.execute(delete(tables.tags).where(tables.tags.c.resource_arn == arn, tables.tags.c.key == tag["Key"]))
        conn.execute(tables.tags.insert().values(resource_arn=arn, key=tag["Key"], value=tag.get("Value", "")))
    count = len(conn.execute(select(tables.tags.c.key).where(tables.tags.c.resource_arn == arn)).all())
    if count > MAX_TAGS:
        raise ResourceLimitExceeded(f"The resource {arn} cannot have more than {MAX_TAGS} tags.")


def drop_all(conn: Connection, arn: str) -> None:
    conn.execute(delete(tables.tags).where(tables.tags.c.resource_arn == arn))


def _resource_exists(conn: Connection, arn: str) -> bool:
    for table in (tables.models, tables.endpoint_configs, tables.endpoints, tables.transform_jobs):
        if conn.execute(select(table.c.name).where(table.c.arn == arn)).first() is not None:
            return True
    return False


def _require(conn: Connection, arn: str) -> None:
    if not _resource_exists(conn, arn):
        raise ValidationException(f"Could not find resource {arn}.")


def add_tags(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        _require(conn, req["ResourceArn"])
        save(conn, req["ResourceArn"], req["Tags"])
    return {"Tags": req["Tags"]}


def list_tags(ctx: ControlContext, req: Request) -> Response:
    arn = req["ResourceArn"]
    with ctx.store.begin() as conn:
        _require(conn, arn)
        rows = conn.execute(
            select(tables.tags.c.key, tables.tags.c.value)
            .where(tables.tags.c.resource_arn == arn)
            .order_by(tables.tags.c.key)
        ).all()
    tags = [{"Key": k, "Value": v} for k, v in rows]
    start = int(req.get("NextToken") or 0) if str(req.get("NextToken") or "0").isdigit() else 0
    size = int(req.get("MaxResults", 50))
    out: Response = {"Tags": tags[start : start + size]}
    if start + size < len(tags):
        out["NextToken"] = str(start + size)
    return out


def delete_tags(ctx: ControlContext, req: Request) -> Response:
    with ctx.store.begin() as conn:
        _require(conn, req["ResourceArn"])
        for key in req["TagKeys"]:
            conn.execute(
                delete(tables.tags).where(tables.tags.c.resource_arn == req["ResourceArn"], tables.tags.c.key == key)
            )
    return {}
