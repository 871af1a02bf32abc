"""typed job spec: the spec holds the whole request (version 1); duplicate columns go

Each job's spec becomes the version-1 document of app/jobs/spec.py: its teachers as one
discriminated field, its datasets, and a cross-domain mapping with only its own fields. The
columns that repeated the spec (teacher_id, epochs and the three dataset ids) are dropped.

Revision ID: b7d41c2e9a10
Revises: 72055cec44cb
Create Date: 2026-12-01 18:00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "b7d41c2e9a10"
down_revision = "72055cec44cb"
branch_labels = None
depends_on = None

# What each mapping reads, as the spec stood before version 1 (it stored every field).
_PHI_FIELDS = {
    "identity": (),
    "gaussian_noise": ("sigma", "seed"),
    "dilated_conv": ("kernel_size", "dilation", "weights"),
    "onnx": ("mapping_id",),
    "vae": (
        "source_dataset_id",
        "target_dataset_id",
        "latent_dim",
        "hidden",
        "epochs",
        "learning_rate",
        "beta",
        "seed",
    ),
}
_MOVED = ("teacher_id", "epochs", "train_dataset_id", "validation_dataset_id", "test_dataset_id")
_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("spec", sa.JSON),
    *(sa.column(name, sa.String) for name in _MOVED if name != "epochs"),
    sa.column("epochs", sa.Integer),
)


def _teachers(old: dict[str, Any], teacher_id: str) -> dict[str, Any]:
    checkpoints = old.get("teacher_checkpoint_ids") or []
    ensemble = old.get("teacher_ids") or []
    if checkpoints:
        return {"kind": "checkpoints", "ids": list(checkpoints)}
    if len(ensemble) > 1:
        return {"kind": "ensemble", "ids": list(ensemble)}
    return {"kind": "single", "id": teacher_id}


def _cross_domain(old: dict[str, Any] | None) -> dict[str, Any] | None:
    if not old:
        return None
    phi = old["phi"]
    return {"phi": phi, **{k: old[k] for k in _PHI_FIELDS[phi] if old.get(k) is not None}}


def version_1(old: dict[str, Any], row: Any) -> dict[str, Any]:
    spec = {k: v for k, v in old.items() if k not in ("teacher_ids", "teacher_checkpoint_ids")}
    spec.update(
        version=1,
        teachers=_teachers(old, row.teacher_id),
        train_dataset_id=row.train_dataset_id,
        validation_dataset_id=row.validation_dataset_id,
        test_dataset_id=row.test_dataset_id,
        cross_domain=_cross_domain(old.get("cross_domain")),
    )
    return spec


def _loaded(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_jobs.c.id, _jobs.c.spec, *(_jobs.c[n] for n in _MOVED))
    ).all()
    for row in rows:
        spec = version_1(_loaded(row.spec), row)
        connection.execute(_jobs.update().where(_jobs.c.id == row.id).values(spec=spec))
    with op.batch_alter_table("jobs") as batch:
        for name in _MOVED:
            batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("epochs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("teacher_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("train_dataset_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("validation_dataset_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("test_dataset_id", sa.String(length=40), nullable=True))
    connection = op.get_bind()
    for row in connection.execute(sa.select(_jobs.c.id, _jobs.c.spec)).all():
        spec = _loaded(row.spec)
        teachers = spec.pop("teachers")
        ids = teachers.get("ids") or [teachers["id"]]
        old = {k: v for k, v in spec.items() if k not in (*_MOVED, "version")}
        old["teacher_ids"] = ids if teachers["kind"] == "ensemble" else []
        old["teacher_checkpoint_ids"] = ids if teachers["kind"] == "checkpoints" else []
        connection.execute(
            _jobs.update()
            .where(_jobs.c.id == row.id)
            .values(
                spec=old,
                teacher_id=ids[0],
                epochs=int(spec["training"]["epochs"]),
                train_dataset_id=spec["train_dataset_id"],
                validation_dataset_id=spec.get("validation_dataset_id"),
                test_dataset_id=spec.get("test_dataset_id"),
            )
        )
