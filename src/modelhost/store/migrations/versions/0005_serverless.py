"""Lambda functions and their queued Event invocations.

Revision ID: 0005_serverless
Revises: 0004_async
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_serverless"
down_revision = "0004_async"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lambda_functions",
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("reserved_concurrency", sa.Integer),
    )
    op.create_table(
        "lambda_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("function", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("received_time", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("lambda_events")
    op.drop_table("lambda_functions")
