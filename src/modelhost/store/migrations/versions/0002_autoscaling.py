"""Application Auto Scaling: scalable targets, scaling policies, scaling activities.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scalable_targets",
        sa.Column("resource_id", sa.String(1600), primary_key=True),
        sa.Column("dimension", sa.String(128), primary_key=True),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "scaling_policies",
        sa.Column("resource_id", sa.String(1600), primary_key=True),
        sa.Column("dimension", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("arn", sa.String(512), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "scaling_activities",
        sa.Column("activity_id", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(1600), nullable=False, index=True),
        sa.Column("dimension", sa.String(128), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for name in ("scaling_activities", "scaling_policies", "scalable_targets"):
        op.drop_table(name)
