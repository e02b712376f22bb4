"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("key", name=op.f("uq_api_tokens_key")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("down_by_health", sa.Boolean(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("disk", sa.BigInteger(), nullable=False),
        sa.Column("arch", sa.String(length=32), nullable=True),
        sa.Column("accelerator", sa.String(length=16), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("used_vcpus", sa.Integer(), nullable=False),
        sa.Column("used_memory", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hosts_status"), ["status"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("vm_id", sa.Uuid(), nullable=True),
        sa.Column("host_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "storage_pools",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("pool_type", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_storage_pools_name")),
    )
    op.create_table(
        "storage_objects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("storage_pool_id", sa.Uuid(), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["storage_pool_id"],
            ["storage_pools.id"],
            name=op.f("fk_storage_objects_storage_pool_id_storage_pools"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_objects")),
        sa.UniqueConstraint("name", name=op.f("uq_storage_objects_name")),
    )
    with op.batch_alter_table("storage_objects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_storage_objects_storage_pool_id"), ["storage_pool_id"], unique=False
        )

    op.create_table(
        "boot_sources",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kernel_image_id", sa.Uuid(), nullable=False),
        sa.Column("initrd_image_id", sa.Uuid(), nullable=True),
        sa.Column("kernel_params", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["initrd_image_id"],
            ["storage_objects.id"],
            name=op.f("fk_boot_sources_initrd_image_id_storage_objects"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["kernel_image_id"],
            ["storage_objects.id"],
            name=op.f("fk_boot_sources_kernel_image_id_storage_objects"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_boot_sources_name")),
    )
    with op.batch_alter_table("boot_sources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_boot_sources_initrd_image_id"), ["initrd_image_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_boot_sources_kernel_image_id"), ["kernel_image_id"], unique=False
        )

    op.create_table(
        "vms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("hypervisor", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("host_id", sa.Uuid(), nullable=False),
        sa.Column("boot_vcpus", sa.Integer(), nullable=False),
        sa.Column("max_vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_size", sa.BigInteger(), nullable=False),
        sa.Column("boot_source_id", sa.Uuid(), nullable=True),
        sa.Column("image", sa.String(length=255), nullable=True),
        sa.Column("image_object_id", sa.Uuid(), nullable=True),
        sa.Column("disk_size", sa.BigInteger(), nullable=True),
        sa.Column("user_data", sa.Text(), nullable=True),
        sa.Column("ssh_keys", sa.JSON(), nullable=False),
        sa.Column("networks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["boot_source_id"],
            ["boot_sources.id"],
            name=op.f("fk_vms_boot_source_id_boot_sources"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_vms_host_id_hosts"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["image_object_id"],
            ["storage_objects.id"],
            name=op.f("fk_vms_image_object_id_storage_objects"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vms_boot_source_id"), ["boot_source_id"], unique=False)
        batch_op.create_index("ix_vms_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_host_id"), ["host_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_vms_image_object_id"), ["image_object_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_vms_status"), ["status"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("vm_id", sa.Uuid(), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_allocations_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("vm_id", name=op.f("pk_allocations")),
    )
    op.create_table(
        "vm_tags",
        sa.Column("vm_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["vm_id"], ["vms.id"], name=op.f("fk_vm_tags_vm_id_vms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("vm_id", "tag", name=op.f("pk_vm_tags")),
    )
    with op.batch_alter_table("vm_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_tags_tag"), ["tag"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_tags_tag"))

    op.drop_table("vm_tags")
    op.drop_table("allocations")
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_status"))
        batch_op.drop_index(batch_op.f("ix_vms_image_object_id"))
        batch_op.drop_index(batch_op.f("ix_vms_host_id"))
        batch_op.drop_index("ix_vms_created_at_id")
        batch_op.drop_index(batch_op.f("ix_vms_boot_source_id"))

    op.drop_table("vms")
    with op.batch_alter_table("boot_sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_boot_sources_kernel_image_id"))
        batch_op.drop_index(batch_op.f("ix_boot_sources_initrd_image_id"))

    op.drop_table("boot_sources")
    with op.batch_alter_table("storage_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_objects_storage_pool_id"))

    op.drop_table("storage_objects")
    op.drop_table("storage_pools")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_vm_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_status"))

    op.drop_table("hosts")
    op.drop_table("api_tokens")
