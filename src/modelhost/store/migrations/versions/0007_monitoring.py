"""Processing jobs, data quality job definitions, monitoring schedules and their executions.

Revision ID: 0007_monitoring
Revises: 0004_async
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_monitoring"
down_revision = "0004_async"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processing_jobs",
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("failure_reason", sa.Text),
        sa.Column("exit_message", sa.Text),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("start_time", sa.Float),
        sa.Column("end_time", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("monitoring_schedule_arn", sa.String(256)),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "data_quality_job_definitions",
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("endpoint_name", sa.String(63)),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "monitoring_schedules",
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("endpoint_name", sa.String(63), index=True),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "monitoring_executions",
        sa.Column("schedule_key", sa.String(63), primary_key=True),
        sa.Column("scheduled_time", sa.Float, primary_key=True),
        sa.Column("schedule_name", sa.String(63), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("processing_job_name", sa.String(63)),
        sa.Column("endpoint_name", sa.String(63)),
        sa.Column("monitoring_type", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text),
    )


def downgrade() -> None:
    for table in ("monitoring_executions", "monitoring_schedules", "data_quality_job_definitions", "processing_jobs"):
        op.drop_table(table)
