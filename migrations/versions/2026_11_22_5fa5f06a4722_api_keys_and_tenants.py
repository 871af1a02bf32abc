"""api keys and tenants

Revision ID: 5fa5f06a4722
Revises: 684e767801db
Create Date: 2026-11-22 17:57:36.955559
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5fa5f06a4722"
down_revision = "684e767801db"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_sha256"),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)
    op.add_column(
        "datasets",
        sa.Column("tenant_id", sa.String(length=64), server_default="local", nullable=False),
    )
    op.create_index(op.f("ix_datasets_tenant_id"), "datasets", ["tenant_id"], unique=False)
    op.add_column(
        "jobs", sa.Column("tenant_id", sa.String(length=64), server_default="local", nullable=False)
    )
    op.create_index(op.f("ix_jobs_tenant_id"), "jobs", ["tenant_id"], unique=False)
    op.add_column(
        "teachers",
        sa.Column("tenant_id", sa.String(length=64), server_default="local", nullable=False),
    )
    op.create_index(op.f("ix_teachers_tenant_id"), "teachers", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_teachers_tenant_id"), table_name="teachers")
    op.drop_column("teachers", "tenant_id")
    op.drop_index(op.f("ix_jobs_tenant_id"), table_name="jobs")
    op.drop_column("jobs", "tenant_id")
    op.drop_index(op.f("ix_datasets_tenant_id"), table_name="datasets")
    op.drop_column("datasets", "tenant_id")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
