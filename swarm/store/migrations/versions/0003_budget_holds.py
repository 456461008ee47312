"""Budget holds in the database: every process's budget check sees the calls other processes
have in flight (they were each process's own, in memory).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:05:03.021709
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("objective_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("usd", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_holds")),
    )
    with op.batch_alter_table("budget_holds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_holds_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_budget_holds_objective_id"), ["objective_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_budget_holds_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budget_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_holds_team_id"))
        batch_op.drop_index(batch_op.f("ix_budget_holds_objective_id"))
        batch_op.drop_index(batch_op.f("ix_budget_holds_expires_at"))

    op.drop_table("budget_holds")
