"""Parquet datasets: numeric feature columns and an optional integer label column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARQUET_MAGIC = b"PAR1"


class TableError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def read_parquet(
    path: Path, label_column: str | None
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """x (N, features) float64, y or None, and the label column used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except Exception as exc:
        raise TableError("file", f"the Parquet file cannot be read: {str(exc)[:200]}") from exc
    names = list(schema.names)
    if label_column is not None and label_column not in names:
        raise TableError(
            "label_column", f"no column {label_column!r}; the columns are {names[:50]}"
        )
    label = label_column if label_column is not None else ("label" if "label" in names else None)
    features = [n for n in names if n != label]
    if not features:
        raise TableError("file", "the table has no feature columns")
    for name in features:
        kind = schema.field(name).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise TableError(
                "file", f"column {name!r} is {kind}, not numeric; features are numbers"
            )
    try:
        table = parquet.read()
    except Exception as exc:
        raise TableError("file", f"the Parquet data cannot be read: {str(exc)[:200]}") from exc
    for name in names:
        if table.column(name).null_count:
            raise TableError("file", f"column {name!r} has {table.column(name).null_count} nulls")
    x = np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in features]
    )
    y = None
    if label is not None:
        kind = schema.field(label).type
        values = table.column(label).to_numpy(zero_copy_only=False)
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise TableError("file", f"label column {label!r} is {kind}; labels are integers")
        y = np.asarray(values, dtype=np.float64)
    return x, y, label
