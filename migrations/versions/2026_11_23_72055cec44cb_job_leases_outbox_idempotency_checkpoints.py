"""job leases, outbox, idempotency keys, checkpoints

Revision ID: 72055cec44cb
Revises: 5fa5f06a4722
Create Date: 2026-11-23 00:42:25.273075
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "72055cec44cb"
down_revision = "5fa5f06a4722"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "scope", "key"),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"], unique=False)
    op.create_table(
        "training_checkpoints",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("run", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "run"),
    )
    op.add_column(
        "jobs", sa.Column("lease_token", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("time_limit_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:

    op.drop_column("jobs", "time_limit_seconds")
    op.drop_column("jobs", "attempts")
    op.drop_column("jobs", "heartbeat_at")
    op.drop_column("jobs", "lease_token")
    op.drop_table("training_checkpoints")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("idempotency_keys")
