"""Team memory's tables: a revision of their own, as a database made before migrations has them
only if memory was on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 18:54:37.829029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("team", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("objective_id", sa.BigInteger(), nullable=True),
        sa.Column("author", sa.String(length=255), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_items")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("memory_items", schema=None) as batch_op:
        batch_op.create_index("ix_memory_items_team_created", ["team", "created_at"], unique=False)
        batch_op.create_index("ix_memory_items_team_kind", ["team", "kind"], unique=False)
        batch_op.create_index(
            "ix_memory_items_team_objective", ["team", "objective_id"], unique=False
        )

    op.create_table(
        "memory_items_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_items_epoch")),
    )


def downgrade() -> None:
    op.drop_table("memory_items_epoch")
    with op.batch_alter_table("memory_items", schema=None) as batch_op:
        batch_op.drop_index("ix_memory_items_team_objective")
        batch_op.drop_index("ix_memory_items_team_kind")
        batch_op.drop_index("ix_memory_items_team_created")

    op.drop_table("memory_items")
