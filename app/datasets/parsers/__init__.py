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
import shutil
import struct
import tempfile
import zipfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from app.datasets.parsers.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGES,
    ImageArchiveError,
    parse_size,
    read_image_archive,
)
from app.datasets.parsers.parquet import PARQUET_MAGIC, TableError, read_parquet

MAX_COMPRESSION_RATIO = 1000
# What an upload may decode to (on disk, streamed), however small the upload: a ceiling on
# zip bombs, lying Parquet metadata and tiny images resized up.
MAX_DECODED_BYTES = 4 * 1024**3
_MIN_DECODED_BUDGET = 64 * 1024**2
# The zip central directory is read whole into memory by zipfile; about 160 bytes an entry.
MAX_CENTRAL_DIRECTORY_BYTES = 160 * MAX_IMAGES
# A label is a class number; a huge one would make the worker build a huge output layer.
MAX_CLASSES = 100_000
CANONICAL_NAME = "dataset.npz"
_NPZ_MEMBERS = ("x.npy", "y.npy")
_SNIFF_BYTES = 64 * 1024
_CHUNK_BYTES = 4 * 1024 * 1024  # arrays are converted and written this much at a time
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


@dataclass(frozen=True)
class _Features:
    """What a parser found: the rows of x as they stream past, and the labels (small)."""

    rows: int
    feature_shape: tuple[int, ...]
    chunks: Iterable[np.ndarray]  # (n, *feature_shape), any real dtype
    labels: np.ndarray | None


def _reject(message: str, field: str = "file") -> DatasetRejected:
    return DatasetRejected(field, message)


def decoded_budget(upload_bytes: int) -> int:
    return min(MAX_DECODED_BYTES, max(_MIN_DECODED_BUDGET, MAX_COMPRESSION_RATIO * upload_bytes))


def _raw_chunks(
    path: Path, dtype: np.dtype, rows: int, shape: tuple[int, ...], offset: int = 0
) -> Iterator[np.ndarray]:
    """Rows of a C-ordered array in a file, a few MB at a time (read, not mapped: the pages do
    not stay in the process's memory)."""
    per_row = math.prod(shape)
    step = max(1, _CHUNK_BYTES // max(1, per_row * dtype.itemsize))
    with path.open("rb") as fh:
        fh.seek(offset)
        for start in range(0, rows, step):
            n = min(step, rows - start)
            chunk = np.fromfile(fh, dtype=dtype, count=n * per_row)
            if chunk.size != n * per_row:
                raise _reject("the array data is truncated")
            yield chunk.reshape(n, *shape)


# ---- zip archives -------------------------------------------------------------------------


def _central_directory_bytes(path: Path) -> int:
    """The central directory size the archive declares, found as zipfile finds it."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        tail_at = max(0, size - (22 + 65535 + 20))
        fh.seek(tail_at)
        tail = fh.read()
        at = len(tail) - 22
        if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[at + 20 : at + 22] != b"\0\0":
            at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return 0  # not a zip: zipfile says so
        directory = struct.unpack_from("<I", tail, at + 12)[0]
        locator = at - 20
        if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
            fh.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
            record = fh.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                directory = max(directory, struct.unpack_from("<Q", record, 40)[0])
    return int(directory)


def _open_zip(path: Path) -> zipfile.ZipFile:
    directory = _central_directory_bytes(path)
    if directory > min(MAX_CENTRAL_DIRECTORY_BYTES, path.stat().st_size):
        raise _reject(
            f"the zip archive declares a central directory of {directory} bytes (too many "
            "members, or a corrupt archive); split it into smaller archives"
        )
    try:
        return zipfile.ZipFile(path)
    except Exception as exc:  # zipfile raises many types on hostile bytes
        raise _reject(
            "the file is not a readable zip archive (NPZ, or images in class folders); it may "
            "be truncated. Save an NPZ with np.savez(f, x=inputs, y=labels)"
        ) from exc


# ---- NPZ ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Npy:
    """An NPZ member unpacked to disk, its header checked against the bytes it holds."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


def _read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of a .npy stream, read without touching the data."""
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def _unpack_member(
    archive: zipfile.ZipFile, name: str, upload_bytes: int, work: Path, budget: int
) -> _Npy:
    member = name.removesuffix(".npy")
    info = archive.getinfo(name)
    # The zip directory's sizes are claims: checked first, then the bytes that come out are
    # counted against the budget as they are written to disk.
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
    path = work / name
    written = 0
    try:
        with archive.open(info) as source, path.open("wb") as out:
            while chunk := source.read(_CHUNK_BYTES):
                written += len(chunk)
                if written > budget:
                    raise _reject(
                        f"member {member!r} unpacks to more than {budget} bytes; refusing a "
                        "likely zip bomb"
                    )
                out.write(chunk)
        with path.open("rb") as fh:
            shape, fortran, dtype = _read_header(fh)
            offset = fh.tell()
    except DatasetRejected:
        raise
    except Exception as exc:  # any parser error on hostile bytes is the file's fault
        raise _reject(
            f"member {member!r} is not a readable .npy array ({str(exc)[:200]}); the file may "
            "be truncated or corrupt"
        ) from exc
    if dtype.hasobject or dtype.fields is not None:
        raise _reject(
            f"member {member!r} has dtype {dtype}: object arrays are refused, and structured "
            "ones too (they would need unpickling); save plain numeric arrays"
        )
    if dtype.kind not in "biuf":
        raise _reject(f"member {member!r} has dtype {dtype}; only real numbers are accepted")
    if len(shape) > 32 or any(d < 0 for d in shape):
        raise _reject(f"member {member!r} declares an impossible shape {list(shape)[:40]}")
    expected = math.prod(shape) * dtype.itemsize
    held = written - offset
    if expected != held:
        raise _reject(
            f"member {member!r} declares shape {list(shape)} of {dtype} ({expected} bytes) but "
            f"holds {held} bytes; the file is truncated or its header is wrong"
        )
    return _Npy(path, offset, shape, dtype, fortran)


def _npy_chunks(npy: _Npy) -> Iterator[np.ndarray]:
    if not npy.fortran or len(npy.shape) < 2:
        yield from _raw_chunks(npy.path, npy.dtype, npy.shape[0], npy.shape[1:], npy.offset)
        return
    data = np.memmap(
        npy.path, dtype=npy.dtype, mode="r", offset=npy.offset, shape=npy.shape, order="F"
    )
    step = max(1, _CHUNK_BYTES // max(1, math.prod(npy.shape[1:]) * npy.dtype.itemsize))
    for start in range(0, npy.shape[0], step):
        yield np.ascontiguousarray(data[start : start + step])


def _parse_npz(archive: zipfile.ZipFile, upload_bytes: int, work: Path) -> _Features:
    names = archive.namelist()
    extra = sorted({n.removesuffix(".npy") for n in names if n not in _NPZ_MEMBERS})
    if extra:
        raise _reject(
            f"unexpected members {extra[:20]}; an NPZ dataset holds `x` and optionally `y` only"
        )
    if len(names) != len(set(names)):
        raise _reject("the archive lists a member twice; save it again with np.savez")
    if "x.npy" not in names:
        raise _reject("the NPZ has no `x` array; save it with np.savez(f, x=inputs, y=labels)")
    budget = decoded_budget(upload_bytes)
    x = _unpack_member(archive, "x.npy", upload_bytes, work, budget)
    if len(x.shape) < 2:
        raise _reject(
            f"`x` has shape {list(x.shape)}; expected (rows, features...) with at least 2 "
            "dimensions (reshape a single feature to (N, 1))"
        )
    rows = x.shape[0]
    labels = None
    if "y.npy" in names:
        y = _unpack_member(archive, "y.npy", upload_bytes, work, budget - x.path.stat().st_size)
        if y.shape != (rows,):
            raise _reject(
                f"`y` has shape {list(y.shape)}; labels must be shaped [{rows}], one per row of x"
            )
        labels = np.concatenate([np.empty(0, y.dtype), *_npy_chunks(y)])
    return _Features(rows, x.shape[1:], _npy_chunks(x), labels)


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


def _parse_csv(path: Path, label_column: str | None, work: Path) -> _Features:
    raw = work / "features.f8"
    features = array("d")  # 8 bytes a value, flushed to `raw` every few MB
    labels = array("q")
    rows = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh, raw.open("wb") as out:
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
                if len(features) * 8 >= _CHUNK_BYTES:
                    features.tofile(out)
                    del features[:]
            features.tofile(out)
    except UnicodeDecodeError as exc:
        raise _reject("the CSV is not UTF-8 text; save it as UTF-8") from exc
    except csv.Error as exc:
        raise _reject(f"the CSV could not be parsed: {str(exc)[:200]}") from exc
    shape = (len(feature_columns),)
    y = np.frombuffer(labels, dtype=np.int64) if label_at is not None else None
    return _Features(rows, shape, _raw_chunks(raw, np.dtype(np.float64), rows, shape), y)


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


def _write_canonical(out_dir: Path, found: _Features, y: np.ndarray | None) -> Path:
    """Stream x into an uncompressed NPZ as float32, counting values that are not finite."""
    canonical = out_dir / CANONICAL_NAME
    partial = out_dir / f".{CANONICAL_NAME}.partial"
    header = {"descr": "<f4", "fortran_order": False, "shape": (found.rows, *found.feature_shape)}
    not_finite = too_large = 0
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            npy_format.write_array_header_1_0(member, header)
            for chunk in found.chunks:
                bad = int(np.count_nonzero(~np.isfinite(chunk))) if chunk.dtype.kind == "f" else 0
                with np.errstate(over="ignore", invalid="ignore"):  # counted just below
                    converted = chunk.astype("<f4")
                not_finite += bad
                too_large += int(np.count_nonzero(~np.isfinite(converted))) - bad
                member.write(converted.tobytes())
        if not_finite:
            raise _reject(
                f"`x` holds {not_finite} NaN or infinite values; drop or impute them first"
            )
        if too_large:
            raise _reject(f"`x` holds {too_large} values too large for float32; rescale them")
        if y is not None:
            with archive.open("y.npy", "w", force_zip64=True) as member:
                npy_format.write_array(member, y, allow_pickle=False)
    os.replace(partial, canonical)
    return canonical


def _is_image_archive(archive: zipfile.ZipFile) -> bool:
    names = [n for n in archive.namelist() if not n.endswith("/")]
    return (
        bool(names)
        and not any(n.endswith(".npy") for n in names)
        and any(n.lower().endswith(IMAGE_SUFFIXES) for n in names)
    )


def _parse_images(
    archive: zipfile.ZipFile,
    upload_bytes: int,
    image_size: str | None,
    image_mode: str,
    work: Path,
) -> tuple[_Features, list[str]]:
    try:
        size = parse_size(image_size)
    except ImageArchiveError as exc:
        raise _reject(str(exc), "image_size") from exc
    raw = work / "images.f4"
    try:
        with raw.open("wb") as out:

            def sink(image: np.ndarray) -> None:
                image.tofile(out)

            shape, y, classes = read_image_archive(
                archive, upload_bytes, size, image_mode, sink, decoded_budget(upload_bytes)
            )
    except ImageArchiveError as exc:
        raise _reject(str(exc), "image_mode" if "image_mode" in str(exc) else "file") from exc
    chunks = _raw_chunks(raw, np.dtype(np.float32), len(y), shape)
    return _Features(len(y), shape, chunks, y), classes


def _parse_parquet(path: Path, label_column: str | None, work: Path) -> tuple[_Features, str]:
    raw = work / "features.f8"
    rows = 0
    labels: list[np.ndarray] = []
    try:
        table = read_parquet(path, label_column, decoded_budget(path.stat().st_size))
        with raw.open("wb") as out:
            for x, y in table.batches:
                x.astype(np.float64, copy=False).tofile(out)
                rows += len(x)
                if y is not None:
                    labels.append(y)
    except TableError as exc:
        raise _reject(str(exc), exc.field) from exc
    shape = (len(table.features),)
    y = np.concatenate([np.empty(0), *labels]) if table.label is not None else None
    found = _Features(rows, shape, _raw_chunks(raw, np.dtype(np.float64), rows, shape), y)
    return found, f"the label column {table.label or 'label'!r}"


def _read_any(
    path: Path,
    filename: str,
    work: Path,
    label_column: str | None,
    image_size: str | None,
    image_mode: str,
) -> tuple[str, _Features, list[str] | None, str]:
    """Sniff the format and parse: (format, features, class names, what to call the labels)."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise _reject("the file is empty")
    size = path.stat().st_size
    if head.startswith(_ZIP_MAGICS):
        with _open_zip(path) as archive:
            if _is_image_archive(archive):
                found, classes = _parse_images(archive, size, image_size, image_mode, work)
                return "images", found, classes, "the class folders"
            return "npz", _parse_npz(archive, size, work), None, "`y`"
    if head.startswith(PARQUET_MAGIC):
        found, where = _parse_parquet(path, label_column, work)
        return "parquet", found, None, where
    if filename.lower().endswith(".csv") or _looks_like_text(head):
        found = _parse_csv(path, label_column, work)
        return "csv", found, None, f"the label column {label_column or 'label'!r}"
    if head.startswith(_NPY_MAGIC):
        raise _reject("this is a bare .npy array; save x (and y) together with np.savez")
    if filename.lower().endswith(".npz"):
        raise _reject("the file is not a zip archive, so not an NPZ; it may be truncated")
    raise _reject("the file is neither an NPZ archive nor UTF-8 CSV text")


def parse_dataset(
    path: Path,
    filename: str,
    out_dir: Path,
    label_column: str | None = None,
    image_size: str | None = None,
    image_mode: str = "L",
) -> ParsedDataset:
    """Check an uploaded dataset and write it to `out_dir` as an uncompressed NPZ holding
    `x` (float32, (N, *feature_shape)) and, when labeled, `y` (int64, (N,)).

    Memory stays bounded whatever the size of the upload: arrays are unpacked to disk,
    counted as they come out, and converted a few MB at a time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".work-"))
    try:
        fmt, found, class_names, where = _read_any(
            path, filename, work, label_column, image_size, image_mode
        )
        if found.rows == 0:
            raise _reject("the dataset is empty (0 rows)")
        if 0 in found.feature_shape:
            shape = [found.rows, *found.feature_shape]
            raise _reject(f"`x` has shape {shape}; every row needs at least one feature")
        labels = _labels(found.labels, found.rows, where) if found.labels is not None else None
        canonical = _write_canonical(out_dir, found, labels)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = None
    if labels is not None:
        values, numbers = np.unique(labels, return_counts=True)
        counts = {int(v): int(n) for v, n in zip(values, numbers, strict=True)}
    return ParsedDataset(
        format=fmt,
        rows=found.rows,
        feature_shape=found.feature_shape,
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
