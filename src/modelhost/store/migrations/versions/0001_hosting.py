"""Models, endpoint configs, endpoints and tags.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _named(name: str, *extra: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        *extra,
    )


def upgrade() -> None:
    _named("models")
    _named("endpoint_configs")
    _named(
        "endpoints",
        sa.Column("config_name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
    )
    op.create_table(
        "tags",
        sa.Column("resource_arn", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    for name in ("tags", "endpoints", "endpoint_configs", "models"):
        op.drop_table(name)
