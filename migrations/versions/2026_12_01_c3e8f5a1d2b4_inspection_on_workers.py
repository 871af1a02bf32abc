"""teachers are inspected by workers: processing teachers, inspection messages, workers seen

A teacher's description (format, shapes, classes) is unknown until a worker has inspected
it, so those columns become nullable and an invalid upload keeps its error. The outbox can
name a teacher to inspect instead of a job to run. Workers record when they were last seen.

Revision ID: c3e8f5a1d2b4
Revises: b7d41c2e9a10
Create Date: 2026-12-01 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c3e8f5a1d2b4"
down_revision = "b7d41c2e9a10"
branch_labels = None
depends_on = None

_DESCRIBED = (
    ("format", sa.String(length=16)),
    ("input_shape", sa.JSON()),
    ("num_classes", sa.Integer()),
    ("parameters", sa.BigInteger()),
    ("output_name", sa.String(length=255)),
    ("output_kind", sa.String(length=16)),
    ("inspection", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("teachers") as batch:
        for name, type_ in _DESCRIBED:
            batch.alter_column(name, existing_type=type_, nullable=True)
        batch.add_column(sa.Column("error_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("error_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE teachers SET inspected_at = created_at")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(sa.Column("teacher_id", sa.String(length=40), nullable=True))
        batch.create_foreign_key(
            "fk_outbox_teacher_id_teachers", "teachers", ["teacher_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_outbox_teacher_id", ["teacher_id"])
    op.create_table(
        "workers_seen",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_workers_seen_queue", "workers_seen", ["queue"])


def downgrade() -> None:
    op.drop_index("ix_workers_seen_queue", table_name="workers_seen")
    op.drop_table("workers_seen")
    op.execute("DELETE FROM outbox WHERE job_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_teacher_id")
        batch.drop_constraint("fk_outbox_teacher_id_teachers", type_="foreignkey")
        batch.drop_column("teacher_id")
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=False)
    op.execute("DELETE FROM teachers WHERE status <> 'ready'")
    with op.batch_alter_table("teachers") as batch:
        batch.drop_column("inspected_at")
        batch.drop_column("error_message")
        batch.drop_column("error_code")
        for name, type_ in _DESCRIBED:
            batch.alter_column(name, existing_type=type_, nullable=False)
