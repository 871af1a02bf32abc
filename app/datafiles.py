"""Parsing uploaded datasets (NPZ, CSV) safely into one canonical NPZ form.

numpy and the standard library only. Uploads are hostile: nothing is unpickled, and nothing is
allocated from a header that the file's own bytes do not back. Every problem with the input
surfaces as `DatasetRejected`, naming the request field to blame and saying how to fix it.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from app.imagefiles import IMAGE_SUFFIXES, ImageArchiveError, parse_size, read_image_archive
from app.tablefiles import PARQUET_MAGIC, TableError, read_parquet

MAX_COMPRESSION_RATIO = 1000
# A label is a class number; a huge one would make the worker build a huge output layer.
MAX_CLASSES = 100_000
CANONICAL_NAME = "dataset.npz"
_NPZ_MEMBERS = ("x.npy", "y.npy")
_SNIFF_BYTES = 64 * 1024
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"


class DatasetRejected(Exception):
    """An uploaded dataset that cannot be used; `message` says what is wrong and how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ParsedDataset:
    format: str  # "npz" | "csv" | "parquet" | "images"
    rows: int
    feature_shape: tuple[int, ...]  # without the row dimension
    num_classes: int | None  # max label + 1; None when unlabeled
    labeled: bool
    class_counts: dict[int, int] | None
    canonical_path: Path
    class_names: list[str] | None = None  # images: label i is the i-th class folder


def _reject(message: str, field: str = "file") -> DatasetRejected:
    return DatasetRejected(field, message)


# ---- NPZ ----------------------------------------------------------------------------------


def _read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy stream, read without touching the data."""
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, _fortran, dtype = npy_format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, _fortran, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _check_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str) -> None:
    """Refuse a member whose header asks for what its bytes do not hold, before any allocation."""
    with archive.open(info) as stream:
        shape, dtype = _read_header(stream)
        header_bytes = stream.tell()
    if dtype.hasobject or dtype.fields is not None:
        raise _reject(
            f"member {member!r} has dtype {dtype}: object arrays are refused, and structured "
            "ones too (they would need unpickling); save plain numeric arrays"
        )
    if dtype.kind not in "biuf":
        raise _reject(f"member {member!r} has dtype {dtype}; only real numbers are accepted")
    expected = math.prod(shape) * dtype.itemsize
    held = info.file_size - header_bytes
    if expected != held:
        raise _reject(
            f"member {member!r} declares shape {list(shape)} of {dtype} ({expected} bytes) but "
            f"holds {held} bytes; the file is truncated or its header is wrong"
        )


def _read_member(archive: zipfile.ZipFile, name: str, upload_bytes: int) -> np.ndarray:
    member = name.removesuffix(".npy")
    info = archive.getinfo(name)
    # The zip directory's sizes are claims too: the compressed size must fit in the upload, and
    # the uncompressed size (which bounds every allocation below) within a sane ratio of it.
    if info.compress_size > upload_bytes:
        raise _reject(
            f"member {member!r} claims {info.compress_size} compressed bytes in a file of "
            f"{upload_bytes}; the archive is truncated or corrupt"
        )
    if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise _reject(
            f"member {member!r} expands {info.file_size} bytes from {info.compress_size} "
            f"(over {MAX_COMPRESSION_RATIO}x); refusing a likely zip bomb"
        )
    try:
        _check_header(archive, info, member)
        with archive.open(info) as stream:
            return npy_format.read_array(stream, allow_pickle=False)
    except DatasetRejected:
        raise
    except Exception as exc:  # any parser error on hostile bytes is the file's fault
        raise _reject(
            f"member {member!r} is not a readable .npy array ({exc}); the file may be "
            "truncated or corrupt"
        ) from exc


def _parse_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _reject(
            "the file is not a readable NPZ (zip) archive; it may be truncated. "
            "Save it with np.savez(f, x=inputs, y=labels)"
        ) from exc
    with archive:
        names = archive.namelist()
        extra = sorted({n.removesuffix(".npy") for n in names if n not in _NPZ_MEMBERS})
        if extra:
            raise _reject(
                f"unexpected members {extra}; an NPZ dataset holds `x` and optionally `y` only"
            )
        if len(names) != len(set(names)):
            raise _reject("the archive lists a member twice; save it again with np.savez")
        if "x.npy" not in names:
            raise _reject("the NPZ has no `x` array; save it with np.savez(f, x=inputs, y=labels)")
        size = path.stat().st_size
        x = _read_member(archive, "x.npy", size)
        y = _read_member(archive, "y.npy", size) if "y.npy" in names else None
    if x.ndim < 2:
        raise _reject(
            f"`x` has shape {list(x.shape)}; expected (rows, features...) with at least 2 "
            "dimensions (reshape a single feature to (N, 1))"
        )
    return x, y


# ---- CSV ----------------------------------------------------------------------------------


def _number(cell: str, row: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise _reject(f"row {row}, column {column!r}: {cell[:40]!r} is not a number") from None


def _label(cell: str, row: int) -> int:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise _reject(
            f"row {row}: label {cell[:40]!r} is not an integer; labels are class numbers 0..K-1"
        )
    return int(value)


def _parse_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    features = array("d")  # 8 bytes a value, not a Python float object per cell
    labels = array("q")
    rows = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                raise _reject("the CSV has no header; its first row must name the columns")
            if label_column is not None and label_column not in header:
                raise _reject(
                    f"no column {label_column!r} in the CSV; its columns are {header[:50]}",
                    field="label_column",
                )
            if label_column is None and "label" in header:
                label_column = "label"
            label_at = header.index(label_column) if label_column is not None else None
            feature_columns = [(i, h) for i, h in enumerate(header) if i != label_at]
            if not feature_columns:
                raise _reject("the CSV has no feature columns besides the label")
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise _reject(
                        f"row {number} has {len(row)} cells but the header has {len(header)}; "
                        "every row needs one value per column"
                    )
                features.extend(_number(row[i], number, name) for i, name in feature_columns)
                if label_at is not None:
                    labels.append(_checked_label(row[label_at], number))
                rows += 1
    except UnicodeDecodeError as exc:
        raise _reject("the CSV is not UTF-8 text; save it as UTF-8") from exc
    except csv.Error as exc:
        raise _reject(f"the CSV could not be parsed: {exc}") from exc
    x = np.frombuffer(features, dtype=np.float64).reshape(rows, len(feature_columns))
    y = np.frombuffer(labels, dtype=np.int64) if label_at is not None else None
    return x, y


def _checked_label(cell: str, row: int) -> int:
    value = _label(cell, row)
    if value < 0:
        raise _reject(f"row {row}: label {cell!r} is negative; labels are class numbers 0..K-1")
    if value >= MAX_CLASSES:
        raise _reject(f"row {row}: label {cell[:40]!r} is too large (at most {MAX_CLASSES - 1})")
    return value


# ---- both formats -------------------------------------------------------------------------


def _labels(y: np.ndarray, rows: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != rows:
        raise _reject(
            f"{where} has shape {list(y.shape)}; labels must be shaped [{rows}], one per row of x"
        )
    if y.dtype.kind == "f":
        if not bool(np.isfinite(y).all()) or not bool(np.all(np.mod(y, 1) == 0)):
            raise _reject(f"{where} holds non-integer values; labels are class numbers 0..K-1")
    elif y.dtype.kind not in "biu":
        raise _reject(f"{where} has dtype {y.dtype}; labels must be integers")
    if rows and y.min() < 0:
        raise _reject(f"{where} holds negative labels (min {y.min()}); labels are 0..K-1")
    if rows and y.max() >= MAX_CLASSES:
        raise _reject(f"{where} holds a label of {y.max()}; at most {MAX_CLASSES - 1} is accepted")
    return y.astype(np.int64)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _write_canonical(out_dir: Path, x: np.ndarray, y: np.ndarray | None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    canonical = out_dir / CANONICAL_NAME
    partial = out_dir / f".{CANONICAL_NAME}.partial"
    with partial.open("wb") as out:
        if y is not None:
            np.savez(out, x=x, y=y)
        else:
            np.savez(out, x=x)
    os.replace(partial, canonical)
    return canonical


def _is_image_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError):
        return False
    return (
        bool(names)
        and not any(n.endswith(".npy") for n in names)
        and any(n.lower().endswith(IMAGE_SUFFIXES) for n in names)
    )


def _parse_images(
    path: Path, image_size: str | None, image_mode: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        size = parse_size(image_size)
    except ImageArchiveError as exc:
        raise _reject(str(exc), "image_size") from exc
    try:
        with zipfile.ZipFile(path) as archive:
            return read_image_archive(archive, path.stat().st_size, size, image_mode)
    except ImageArchiveError as exc:
        raise _reject(str(exc), "image_mode" if "image_mode" in str(exc) else "file") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise _reject("the zip archive cannot be read") from exc


def parse_dataset(
    path: Path,
    filename: str,
    out_dir: Path,
    label_column: str | None = None,
    image_size: str | None = None,
    image_mode: str = "L",
) -> ParsedDataset:
    """Check an uploaded NPZ or CSV and write it to `out_dir` as an uncompressed NPZ holding
    `x` (float32, (N, *feature_shape)) and, when labeled, `y` (int64, (N,))."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise _reject("the file is empty")
    class_names: list[str] | None = None
    y: np.ndarray | None
    if head.startswith(_ZIP_MAGICS) and _is_image_archive(path):
        fmt = "images"
        x, y, class_names = _parse_images(path, image_size, image_mode)
    elif head.startswith(_ZIP_MAGICS):
        fmt = "npz"
        x, y = _parse_npz(path)
    elif head.startswith(PARQUET_MAGIC):
        fmt = "parquet"
        try:
            x, y, label_column = read_parquet(path, label_column)
        except TableError as exc:
            raise _reject(str(exc), exc.field) from exc
    elif filename.lower().endswith(".csv") or _looks_like_text(head):
        fmt = "csv"
        x, y = _parse_csv(path, label_column)
    elif head.startswith(_NPY_MAGIC):
        raise _reject("this is a bare .npy array; save x (and y) together with np.savez")
    elif filename.lower().endswith(".npz"):
        raise _reject("the file is not a zip archive, so not an NPZ; it may be truncated")
    else:
        raise _reject("the file is neither an NPZ archive nor UTF-8 CSV text")
    rows = int(x.shape[0])
    if rows == 0:
        raise _reject("the dataset is empty (0 rows)")
    if 0 in x.shape[1:]:
        raise _reject(f"`x` has shape {list(x.shape)}; every row needs at least one feature")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise _reject(f"`x` holds {bad} NaN or infinite values; drop or impute them first")
    with np.errstate(over="ignore"):  # counted just below
        x = x.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise _reject(f"`x` holds {bad} values too large for float32; rescale the features")
    where = (
        "`y`"
        if fmt == "npz"
        else "the class folders"
        if fmt == "images"
        else f"the label column {label_column or 'label'!r}"
    )
    labels = _labels(y, rows, where) if y is not None else None
    canonical = _write_canonical(out_dir, x, labels)
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
        class_names=class_names,
    )


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a canonical dataset written by parse_dataset: (x float32, y int64 or None)."""
    with np.load(path, allow_pickle=False) as data:
        x = data["x"].astype(np.float32, copy=False)
        y = data["y"].astype(np.int64, copy=False) if "y" in data.files else None
    return x, y
