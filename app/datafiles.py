"""Parsing uploaded datasets (NPZ, CSV) safely into one canonical NPZ form.

numpy and the standard library only. Uploads are hostile: no pickles, and no allocation that
the file's own bytes do not back."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

MAX_COMPRESSION_RATIO = 1000
CANONICAL_NAME = "dataset.npz"


class DatasetRejected(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ParsedDataset:
    format: str
    rows: int
    feature_shape: tuple[int, ...]
    num_classes: int | None
    labeled: bool
    class_counts: dict[int, int] | None
    canonical_path: Path


def _reject(message: str, field: str = "file") -> DatasetRejected:
    return DatasetRejected(field, message)


def _read_header(stream: IO[bytes], member: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of a .npy stream, read without touching the data."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:
        raise _reject(f"member {member!r} is not a valid .npy array: {exc}") from exc
    return tuple(int(d) for d in shape), np.dtype(dtype), 0


def _checked_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    info = archive.getinfo(name)
    member = name[:-4]
    if info.compress_size and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO:
        raise _reject(
            f"member {member!r} is compressed {info.file_size // info.compress_size}x; "
            "refusing a likely zip bomb"
        )
    with archive.open(info) as stream:
        shape, dtype, _ = _read_header(stream, member)
        header_bytes = stream.tell()  # type: ignore[attr-defined]
        if dtype.hasobject or dtype.fields is not None:
            raise _reject(
                f"member {member!r} has dtype {dtype}: object and structured arrays are "
                "refused (they would need unpickling); save plain numeric arrays"
            )
        if dtype.kind not in "biuf":
            raise _reject(f"member {member!r} has dtype {dtype}; only numbers are accepted")
        expected = math.prod(shape) * dtype.itemsize
        if expected != info.file_size - header_bytes:
            raise _reject(
                f"member {member!r} declares shape {list(shape)} of {dtype} "
                f"({expected} bytes) but holds {info.file_size - header_bytes} bytes; "
                "the file is truncated or its header is wrong"
            )
    with archive.open(info) as stream:
        try:
            return np.asarray(np.load(io.BytesIO(stream.read()), allow_pickle=False))
        except Exception as exc:
            raise _reject(f"member {member!r} could not be read: {exc}") from exc


def _labels(y: np.ndarray, rows: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != rows:
        raise _reject(
            f"{where} has shape {list(y.shape)}; labels must be shaped [{rows}], one per row of x"
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(np.equal(np.mod(y, 1), 0)):
            raise _reject(f"{where} holds non-integer values; labels are class numbers 0..K-1")
    elif y.dtype.kind not in "biu":
        raise _reject(f"{where} has dtype {y.dtype}; labels must be integers")
    if len(y) and y.min() < 0:
        raise _reject(f"{where} holds negative labels (min {int(y.min())}); labels are 0..K-1")
    return y.astype(np.int64)


def _parse_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _reject("the file is not a readable NPZ (zip) archive") from exc
    with archive:
        names = archive.namelist()
        extra = sorted(n for n in names if n not in ("x.npy", "y.npy"))
        if extra:
            raise _reject(
                f"unexpected members {extra}; an NPZ dataset holds `x` and optionally `y`"
            )
        if "x.npy" not in names:
            raise _reject("the NPZ has no `x` array; save it with np.savez(f, x=inputs, y=labels)")
        x = _checked_member(archive, "x.npy")
        y = _checked_member(archive, "y.npy") if "y.npy" in names else None
    if x.ndim < 2:
        raise _reject(f"`x` has shape {list(x.shape)}; expected (rows, features...)")
    return x, y


def _number(cell: str, row: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise _reject(f"row {row}, column {column!r}: {cell[:40]!r} is not a number") from None


def _parse_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise _reject("the CSV is empty; the first row must name the columns")
            header = [h.strip() for h in header]
            if label_column is not None and label_column not in header:
                raise _reject(
                    f"no column {label_column!r}; the columns are {header[:50]}",
                    field="label_column",
                )
            label = (
                label_column
                if label_column is not None
                else ("label" if "label" in header else None)
            )
            label_at = header.index(label) if label is not None else None
            features: list[list[float]] = []
            labels: list[float] = []
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise _reject(
                        f"row {number} has {len(row)} cells; the header has {len(header)}"
                    )
                values = [_number(c, number, header[i]) for i, c in enumerate(row) if i != label_at]
                features.append(values)
                if label_at is not None:
                    value = _number(row[label_at], number, header[label_at])
                    if not value.is_integer():
                        raise _reject(f"row {number}: label {row[label_at]!r} is not an integer")
                    labels.append(value)
    except UnicodeDecodeError as exc:
        raise _reject("the file is neither an NPZ archive nor UTF-8 CSV text") from exc
    except csv.Error as exc:
        raise _reject(f"the CSV could not be parsed: {exc}") from exc
    width = len(header) - (1 if label_at is not None else 0)
    x = np.asarray(features, dtype=np.float32).reshape(len(features), width)
    y = np.asarray(labels, dtype=np.float64) if label_at is not None else None
    return x, y


def parse_dataset(
    path: Path, filename: str, out_dir: Path, label_column: str | None = None
) -> ParsedDataset:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:4] == b"PK\x03\x04":
        fmt = "npz"
        x, y = _parse_npz(path)
    elif not head:
        raise _reject("the file is empty")
    else:
        fmt = "csv"
        x, y = _parse_csv(path, label_column)
    rows = int(x.shape[0])
    if rows == 0:
        raise _reject("the dataset is empty (0 rows)")
    if 0 in x.shape[1:]:
        raise _reject(f"`x` has shape {list(x.shape)}: every row needs at least one feature")
    x = x.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise _reject(f"`x` holds {bad} NaN or infinite values; clean or impute them first")
    labels = (
        _labels(y, rows, "`y`" if fmt == "npz" else "the label column") if y is not None else None
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    canonical = out_dir / CANONICAL_NAME
    with canonical.open("wb") as out:
        if labels is not None:
            np.savez(out, x=x, y=labels)
        else:
            np.savez(out, x=x)
    counts = None
    if labels is not None:
        values, numbers = np.unique(labels, return_counts=True)
        counts = {int(v): int(n) for v, n in zip(values, numbers, strict=True)}
    return ParsedDataset(
        format=fmt,
        rows=rows,
        feature_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=int(labels.max()) + 1 if labels is not None else None,
        labeled=labels is not None,
        class_counts=counts,
        canonical_path=canonical,
    )


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a canonical dataset written by parse_dataset."""
    with np.load(path, allow_pickle=False) as data:
        x = data["x"].astype(np.float32, copy=False)
        y = data["y"].astype(np.int64, copy=False) if "y" in data.files else None
    return x, y
