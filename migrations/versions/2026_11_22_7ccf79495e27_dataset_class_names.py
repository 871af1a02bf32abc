"""dataset class names

Revision ID: 7ccf79495e27
Revises: e283ffa59822
Create Date: 2026-11-22 17:40:59.232221
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7ccf79495e27"
down_revision = "e283ffa59822"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("class_names", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("datasets", "class_names")
