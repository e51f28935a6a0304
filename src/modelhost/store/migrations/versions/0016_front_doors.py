"""Front doors sharing one database: the leader's published routes.

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


def downgrade() -> None:
    op.drop_table("front_door_routes")
