"""Asynchronous inference, faster: the inline body in the row, two unused indexes dropped.

The inline body (at most 128000 bytes) is written with the row in the accept's one transaction
instead of as a file beside it; ``inference_id`` and ``endpoint`` were indexed but never queried.

Revision ID: 0008_async_fast
Revises: 0004_async
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_async_fast"
down_revision = "0004_async"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("async_requests") as batch:
        batch.add_column(sa.Column("body", sa.LargeBinary))
        batch.drop_index("ix_async_requests_inference_id")
        batch.drop_index("ix_async_requests_endpoint")


def downgrade() -> None:
    with op.batch_alter_table("async_requests") as batch:
        batch.create_index("ix_async_requests_endpoint", ["endpoint"])
        batch.create_index("ix_async_requests_inference_id", ["inference_id"])
        batch.drop_column("body")
