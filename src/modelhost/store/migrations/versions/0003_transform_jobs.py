"""Batch transform jobs and the per-object completion record a resumed job reads.

Revision ID: 0003_transform
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_transform"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transform_jobs",
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("start_time", sa.Float),
        sa.Column("end_time", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
        sa.Column("progress", sa.Text),
    )
    op.create_table(
        "transform_job_objects",
        sa.Column("job_key", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("records", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_uri", sa.Text),
        sa.Column("reason", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("transform_job_objects")
    op.drop_table("transform_jobs")
