"""Parquet datasets: numeric feature columns and an optional integer label column.

Bounded before anything is read: the footer's length, the columns, the rows and decoded size
the metadata claims (checked against the file's size), and each column's pages (their headers
are walked first, app/parquet_pages.py). pyarrow then reads a few columns at a time, so what it
holds at once (a buffer, a compressed and a decompressed page, a dictionary per column) stays
under GROUP_BYTES however wide the table. pyarrow decodes a row group's column whole, so a
column whose chunk of one row group decodes to more than that is refused (pyarrow and pandas
write row groups of 1 Mi rows: 8 MB for a float64 column). Each group of columns goes to a file
on disk, and the rows are put back together from those files a few MB at a time."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.datasets.parsers.limits import DatasetLimits, over
from app.datasets.parsers.parquet_pages import PagesRejected, column_costs

PARQUET_MAGIC = b"PAR1"
MAX_FOOTER_BYTES = 8 * 1024 * 1024  # the metadata pyarrow parses whole: a few MB at most
BUFFER_BYTES = 64 * 1024  # pyarrow's read buffer, per column
GROUP_BYTES = 24 * 1024 * 1024  # what reading one group of columns may hold at once
MAX_PAGES = 1_000_000
_CHUNK_BYTES = 4 * 1024 * 1024


class TableError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ParquetTable:
    features: list[str]
    label: str | None
    rows: int
    chunks: Iterator[np.ndarray]  # (n, features) float64, in row order
    labels: Path | None  # float64, one a row


def _footer_bytes(path: Path) -> int:
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8))
        tail = fh.read(8)
    if len(tail) < 8 or tail[4:] != PARQUET_MAGIC:
        raise TableError("file", "the file starts like Parquet but has no Parquet footer")
    return int(struct.unpack("<I", tail[:4])[0])


def _open(path: Path) -> Any:
    import pyarrow.parquet as pq

    footer = _footer_bytes(path)
    if footer > MAX_FOOTER_BYTES:
        raise TableError(
            "file",
            f"the Parquet metadata takes {footer:,} bytes (at most {MAX_FOOTER_BYTES:,}); "
            "write the table with fewer row groups or columns",
        )
    try:
        return pq.ParquetFile(path, buffer_size=BUFFER_BYTES)
    except Exception as exc:
        raise TableError("file", f"the Parquet file cannot be read: {str(exc)[:200]}") from exc


def _schema(parquet: Any, label_column: str | None) -> tuple[list[str], str | None]:
    import pyarrow as pa

    schema = parquet.schema_arrow
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
    return features, label


def _check_size(
    parquet: Any, path: Path, columns: int, features: int, limits: DatasetLimits, max_bytes: int
) -> int:
    metadata = parquet.metadata
    if metadata.num_columns != columns:  # nested columns have several leaves
        raise TableError("file", "the table has nested columns; features are plain numbers")
    if columns > limits.max_table_columns:
        advice = "split the table, or drop columns"
        raise TableError(
            "file",
            over(
                "the table's columns",
                columns,
                limits.max_table_columns,
                "max_table_columns",
                advice,
            ),
        )
    if features > limits.max_features:
        raise TableError(
            "file",
            over(
                "feature columns",
                features,
                limits.max_features,
                "max_dataset_features",
                "reduce the features",
            ),
        )
    rows = int(metadata.num_rows)
    declared = sum(
        int(metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups)
    )
    if rows < 0 or declared < 0 or max(rows * columns * 8, declared) > max_bytes:
        raise TableError(
            "file",
            f"the Parquet file declares {rows} rows of {columns} columns, more than "
            f"{max_bytes} bytes once decoded from a file of {path.stat().st_size} "
            "(DISTILLERY_MAX_DECODED_BYTES, or 1000 times the upload); upload the table in parts",
        )
    return rows


def _width(kind: Any) -> float:
    """Bytes a decoded value of this (numeric) Arrow type takes, with its validity bit."""
    return 0.25 if kind.bit_width == 1 else kind.bit_width / 8 + 0.125


def _groups(names: list[str], costs: dict[str, int]) -> list[list[str]]:
    """Consecutive columns, as many to a group as fit in GROUP_BYTES."""
    groups: list[list[str]] = []
    held = GROUP_BYTES
    for name in names:
        cost = costs[name] + BUFFER_BYTES
        if cost > GROUP_BYTES:
            raise TableError(
                "file",
                f"column {name!r} takes {cost:,} bytes to read in one row group (at most "
                f"{GROUP_BYTES:,}); write the file with smaller row groups (row_group_size)",
            )
        if held + cost > GROUP_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(name)
        held += cost
    return groups


def _write_group(parquet: Any, columns: list[str], rows: int, out: Path) -> None:
    """The columns' values as float64 rows (n, len(columns)), in a raw file."""
    seen = 0
    step = max(1, _CHUNK_BYTES // (8 * len(columns)))
    try:
        with out.open("wb") as fh:
            for batch in parquet.iter_batches(batch_size=step, columns=columns, use_threads=False):
                seen += batch.num_rows
                if seen > rows:
                    raise TableError("file", "the Parquet file holds more rows than it declares")
                for name in columns:
                    nulls = batch.column(name).null_count
                    if nulls:
                        raise TableError("file", f"column {name!r} has {nulls} nulls")
                values = [
                    batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                    for n in columns
                ]
                np.column_stack(values).tofile(fh)
    except TableError:
        raise
    except Exception as exc:  # pyarrow's errors on hostile bytes are the file's fault
        raise TableError("file", f"the Parquet data cannot be read: {str(exc)[:200]}") from exc
    if seen != rows:
        raise TableError("file", f"the Parquet file declares {rows} rows but holds {seen}")


def _rows(files: list[tuple[Path, int]], rows: int) -> Iterator[np.ndarray]:
    """The groups' files side by side, a few MB of rows at a time."""
    width = sum(w for _, w in files)
    step = max(1, _CHUNK_BYTES // (8 * width))
    for start in range(0, rows, step):
        n = min(step, rows - start)
        parts = []
        for path, w in files:
            with path.open("rb") as fh:
                fh.seek(start * w * 8)
                parts.append(np.fromfile(fh, np.float64, n * w).reshape(n, w))
        yield np.hstack(parts)


def read_parquet(
    path: Path, label_column: str | None, max_bytes: int, limits: DatasetLimits, work: Path
) -> ParquetTable:
    """Check a Parquet file and unpack its columns to `work`; the rows come from `chunks`.

    `max_bytes` bounds what the decoded table may take (as float64), so that a small file
    claiming billions of rows (run-length encoding makes that cheap) is refused up front."""
    parquet = _open(path)
    features, label = _schema(parquet, label_column)
    columns = [*features, *([label] if label is not None else [])]
    rows = _check_size(parquet, path, len(columns), len(features), limits, max_bytes)
    schema = parquet.schema_arrow  # built afresh on every access
    names = list(schema.names)
    widths = [_width(schema.field(name).type) for name in names]
    try:
        with path.open("rb") as fh:
            costs = column_costs(fh, parquet.metadata, path.stat().st_size, MAX_PAGES, widths)
    except PagesRejected as exc:
        raise TableError("file", str(exc)) from exc
    by_name = dict(zip(names, costs, strict=True))
    files: list[tuple[Path, int]] = []
    for i, group in enumerate(_groups(features, by_name)):
        files.append((work / f"columns-{i}.f8", len(group)))
        _write_group(parquet, group, rows, files[-1][0])
    labels = None
    if label is not None:
        _groups([label], by_name)
        labels = work / "labels.f8"
        _write_group(parquet, [label], rows, labels)
    return ParquetTable(features, label, rows, _rows(files, rows), labels)
