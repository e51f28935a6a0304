"""Front doors sharing one database: the leader's published routes, the followers' request counters.

Revision ID: 0016_front_doors
Revises: 0004_async
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_front_doors"
down_revision = "0004_async"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "front_door_routes",
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "front_door_traffic",
        sa.Column("door", sa.String(32), primary_key=True),
        sa.Column("name_key", sa.String(63), primary_key=True),
        sa.Column("slot", sa.String(80), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors_4xx", sa.Integer, nullable=False),
        sa.Column("errors_5xx", sa.Integer, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("front_door_traffic")
    op.drop_table("front_door_routes")
