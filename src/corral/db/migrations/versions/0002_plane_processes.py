"""control-plane processes, the process running each job, the kind of a job's error

Revision ID: 0002
Revises: 0001
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
        "plane_processes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plane_processes")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("process_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("error_status", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_jobs_process_id"), ["process_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_process_id"))
        batch.drop_column("error_status")
        batch.drop_column("process_id")
    op.drop_table("plane_processes")
