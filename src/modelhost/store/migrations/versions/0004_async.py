"""Asynchronous inference: the durable request queue.

Revision ID: 0004_async
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_async"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "async_requests",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("inference_id", sa.String(64), nullable=False, index=True),
        sa.Column("endpoint", sa.String(63), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("received_time", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires", sa.Float),
        sa.Column("completed_time", sa.Float),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("notification", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("async_requests")
