"""managed networks: a network of the fleet by name, and what each host made of it

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_networks")),
        sa.UniqueConstraint("name", name=op.f("uq_networks_name")),
    )
    op.create_table(
        "network_hosts",
        sa.Column("network_id", sa.Uuid(), nullable=False),
        sa.Column("host_id", sa.Uuid(), nullable=False),
        sa.Column("bridge", sa.String(length=16), nullable=False),
        sa.Column("subnet", sa.String(length=64), nullable=False),
        sa.Column("gateway", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
            name=op.f("fk_network_hosts_network_id_networks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
            name=op.f("fk_network_hosts_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("network_id", "host_id", name=op.f("pk_network_hosts")),
    )
    with op.batch_alter_table("network_hosts") as batch:
        batch.create_index(batch.f("ix_network_hosts_host_id"), ["host_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("network_hosts") as batch:
        batch.drop_index(batch.f("ix_network_hosts_host_id"))
    op.drop_table("network_hosts")
    op.drop_table("networks")
