"""API token roles: `admin` or `user`; the tokens made before roles existed become `admin`

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every token could do everything until now: keep it so (nothing that works breaks). The
    # column default only fills the existing rows; new tokens always name their role.
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="admin")
        )
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("role", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("role")
