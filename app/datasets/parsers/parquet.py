"""Parquet datasets: numeric feature columns and an optional integer label column.

Read in record batches, never as one table: memory is bounded by a batch, and the row count
and sizes the file's metadata claims are checked against the file's size before reading."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARQUET_MAGIC = b"PAR1"
_BATCH_ROWS = 16_384


class TableError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ParquetTable:
    features: list[str]
    label: str | None
    rows: int  # as the metadata claims; the batches are counted against it
    batches: Iterator[tuple[np.ndarray, np.ndarray | None]]  # x (n, features) float64, y


def _batches(
    parquet: object, features: list[str], label: str | None, rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    columns = [*features, *([label] if label is not None else [])]
    seen = 0
    try:
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns):  # type: ignore[attr-defined]
            seen += batch.num_rows
            if seen > rows:
                raise TableError("file", "the Parquet file holds more rows than it declares")
            for name in columns:
                nulls = batch.column(name).null_count
                if nulls:
                    raise TableError("file", f"column {name!r} has {nulls} nulls")
            x = np.column_stack(
                [
                    batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                    for n in features
                ]
            )
            y = None
            if label is not None:
                y = np.asarray(batch.column(label).to_numpy(zero_copy_only=False), np.float64)
            yield x, y
    except TableError:
        raise
    except Exception as exc:  # pyarrow's errors on hostile bytes are the file's fault
        raise TableError("file", f"the Parquet data cannot be read: {str(exc)[:200]}") from exc
    if seen != rows:
        raise TableError("file", f"the Parquet file declares {rows} rows but holds {seen}")


def read_parquet(path: Path, label_column: str | None, max_bytes: int) -> ParquetTable:
    """Open a Parquet file and check its schema; the rows come from `batches` as they are read.

    `max_bytes` bounds what the decoded table may take (as float64), so that a small file
    claiming billions of rows (run-length encoding makes that cheap) is refused up front."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        rows = int(parquet.metadata.num_rows)
        declared = sum(
            int(parquet.metadata.row_group(i).total_byte_size)
            for i in range(parquet.metadata.num_row_groups)
        )
    except Exception as exc:
        raise TableError("file", f"the Parquet file cannot be read: {str(exc)[:200]}") from exc
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise TableError("file", "the table names a column twice; give each column one name")
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
    if label is not None:
        kind = schema.field(label).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise TableError("file", f"label column {label!r} is {kind}; labels are integers")
    if rows < 0 or declared < 0 or max(rows * len(names) * 8, declared) > max_bytes:
        raise TableError(
            "file",
            f"the Parquet file declares {rows} rows of {len(names)} columns, more than "
            f"{max_bytes} bytes once decoded from a file of {path.stat().st_size}; "
            "upload the table in parts",
        )
    return ParquetTable(features, label, rows, _batches(parquet, features, label, rows))
