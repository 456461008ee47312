"""A message's last edit time on its ref: web replicas take turns editing a progress message
by it, so together they keep to the platform's edit rate (bot/progress.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_refs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edited_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_refs", schema=None) as batch_op:
        batch_op.drop_column("edited_at")
