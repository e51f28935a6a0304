"""What every job family's Stop* shares (transform and processing jobs): InProgress -> Stopping, once."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table

from modelhost.control.context import ControlContext, Response
from modelhost.errors import ValidationException


def request_stop(
    ctx: ControlContext, table: Table, name: str, noun: str, not_found: Callable[[str], ValidationException]
) -> Response:
    """Mark the job Stopping (its supervisor stops it on the next pass); a second Stop is a no-op."""
    with ctx.store.begin() as conn:
        row = ctx.store.get(conn, table, name)
        if row is None:
            raise not_found(name)
        if row["status"] == "Stopping":
            return {}
        if row["status"] != "InProgress":
            raise ValidationException(
                f"The {noun} {row['name']} is not in progress (status {row['status']}) and cannot be stopped."
            )
        ctx.store.update(conn, table, name, {"status": "Stopping", "last_modified_time": ctx.now()})
    ctx.wake()
    return {}
