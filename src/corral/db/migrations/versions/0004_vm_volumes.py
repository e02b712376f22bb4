"""VM data volumes: blank disks (bytes each) attached after the root disk (aleph's
`persistence: host` volumes); the VMs made before have none

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("volumes", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("volumes")
