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
import tempfile
import zipfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from app.datasets.parsers.csvlines import BoundedLines, RecordTooLarge
from app.datasets.parsers.fortran import c_rows, to_c_order
from app.datasets.parsers.images import (
    IMAGE_SUFFIXES,
    ImageArchiveError,
    parse_size,
    read_image_archive,
)
from app.datasets.parsers.labels import LabelFile, LabelsRejected, summarize, write_int64
from app.datasets.parsers.limits import MAX_ROWS, DatasetLimits, over
from app.datasets.parsers.parquet import PARQUET_MAGIC, TableError, read_parquet
from app.datasets.parsers.text import TextColumns, TextRejected, detect_text, parse_text
from app.datasets.parsers.zipdirectory import read_directory

MAX_COMPRESSION_RATIO = 1000
_MIN_DECODED_BUDGET = 64 * 1024**2
# zipfile holds the central directory and a ZipInfo per entry: at most this much an entry.
CENTRAL_DIRECTORY_BYTES_PER_ENTRY = 128
# A label is a class number; a huge one would make the worker build a huge output layer.
MAX_CLASSES = 100_000
CANONICAL_NAME = "dataset.npz"
_NPZ_MEMBERS = ("x.npy", "y.npy")
_SNIFF_BYTES = 64 * 1024
_CHUNK_BYTES = (
    4 * 1024 * 1024
)  # zip members are unpacked, and CSV rows flushed, this much at a time
_CHUNK_VALUES = 1024 * 1024  # arrays are converted and written this many values at a time
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
    format: str  # "npz" | "csv" | "parquet" | "images" | "text-csv" | "text-jsonl" | "text-parquet"
    rows: int
    feature_shape: tuple[int, ...]  # without the row dimension; () for text
    num_classes: int | None  # max label + 1 (text with named labels: their number); None unlabeled
    labeled: bool
    class_counts: dict[int, int] | dict[str, int] | None
    canonical_path: Path
    class_names: list[str] | None = None  # images: label i is the i-th class folder


@dataclass(frozen=True)
class _Features:
    """What a parser found: the rows of x as they stream past, and the labels (small)."""

    rows: int
    feature_shape: tuple[int, ...]
    chunks: Iterable[np.ndarray]  # the values of x in C order, any real dtype, in pieces
    labels: LabelFile | None


def _reject(message: str, field: str = "file") -> DatasetRejected:
    return DatasetRejected(field, message)


def decoded_budget(upload_bytes: int, limits: DatasetLimits) -> int:
    """What an upload may decode to (on disk, streamed), however small the upload: a ceiling
    on zip bombs, lying Parquet metadata and tiny images resized up."""
    ceiling = max(_MIN_DECODED_BUDGET, MAX_COMPRESSION_RATIO * upload_bytes)
    return min(limits.max_decoded_bytes, ceiling)


def _check_row(shape: tuple[int, ...], limits: DatasetLimits) -> None:
    values = math.prod(shape)
    if values > limits.max_features:
        raise _reject(
            over(
                f"values in one row (shape {list(shape)})",
                values,
                limits.max_features,
                "max_dataset_features",
                "reduce the features of each row",
            )
        )


def _raw_chunks(
    path: Path, dtype: np.dtype, rows: int, shape: tuple[int, ...], offset: int = 0
) -> Iterator[np.ndarray]:
    """The values of a C-ordered array in a file, in order, about a million at a time (read,
    not mapped: the pages do not stay in the process's memory). Pieces may split a row."""
    total = rows * math.prod(shape)
    with path.open("rb") as fh:
        fh.seek(offset)
        for start in range(0, total, _CHUNK_VALUES):
            n = min(_CHUNK_VALUES, total - start)
            chunk = np.fromfile(fh, dtype=dtype, count=n)
            if chunk.size != n:
                raise _reject("the array data is truncated")
            yield chunk


# ---- zip archives -------------------------------------------------------------------------


def _open_zip(path: Path, limits: DatasetLimits) -> zipfile.ZipFile:
    cap = CENTRAL_DIRECTORY_BYTES_PER_ENTRY * limits.max_images
    directory = read_directory(path, cap)
    if directory is not None and directory.size > min(cap, path.stat().st_size):
        raise _reject(
            f"the zip archive declares a central directory of {directory.size:,} bytes (at most "
            f"{cap:,}: {CENTRAL_DIRECTORY_BYTES_PER_ENTRY} bytes for each of DISTILLERY_MAX_IMAGES "
            "members), so too many members or a corrupt archive; split it into smaller archives"
        )
    if directory is not None and directory.entries > limits.max_images:
        raise _reject(
            over(
                "members in the zip archive",
                directory.entries,
                limits.max_images,
                "max_images",
                "split it into smaller archives",
            )
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


def _npy_chunks(npy: _Npy, work: Path) -> Iterator[np.ndarray]:
    if not npy.fortran or len(npy.shape) < 2:
        yield from _raw_chunks(npy.path, npy.dtype, npy.shape[0], npy.shape[1:], npy.offset)
        return
    rows = work / "fortran-rows"
    try:
        to_c_order(npy.path, npy.offset, npy.dtype, npy.shape, rows)
        npy.path.unlink()  # the disk the Fortran copy took is not needed twice
        if len(npy.shape) == 2:
            yield from _raw_chunks(rows, npy.dtype, npy.shape[0], npy.shape[1:])
        else:
            yield from c_rows(rows, npy.dtype, npy.shape)
    except ValueError as exc:
        raise _reject(f"`x` cannot be read: {exc}") from exc


def _parse_npz(
    archive: zipfile.ZipFile, upload_bytes: int, work: Path, limits: DatasetLimits
) -> _Features:
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
    budget = decoded_budget(upload_bytes, limits)
    x = _unpack_member(archive, "x.npy", upload_bytes, work, budget)
    if len(x.shape) < 2:
        raise _reject(
            f"`x` has shape {list(x.shape)}; expected (rows, features...) with at least 2 "
            "dimensions (reshape a single feature to (N, 1))"
        )
    _check_row(x.shape[1:], limits)
    rows = x.shape[0]
    labels = None
    if "y.npy" in names:
        y = _unpack_member(archive, "y.npy", upload_bytes, work, budget - x.path.stat().st_size)
        if y.shape != (rows,):
            raise _reject(
                f"`y` has shape {list(y.shape)}; labels must be shaped [{rows}], one per row of x"
            )
        labels = LabelFile(y.path, y.dtype, rows, y.offset)
    return _Features(rows, x.shape[1:], _npy_chunks(x, work), labels)


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


def _csv_columns(header: list[str], label_column: str | None) -> tuple[int | None, list[int]]:
    """Where the label is (if any) and where the features are."""
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
    features = [i for i in range(len(header)) if i != label_at]
    if not features:
        raise _reject("the CSV has no feature columns besides the label")
    return label_at, features


def _parse_csv(
    path: Path, label_column: str | None, work: Path, limits: DatasetLimits, budget: int
) -> _Features:
    """Rows streamed to raw files (features float64, labels int64) a few MB at a time; each
    record bounded before csv splits it (app/csvlines.py)."""
    raw, label_path = work / "features.f8", work / "labels.i8"
    features = array("d")  # 8 bytes a value, flushed to `raw` every few MB
    labels = array("q")
    rows = 0
    try:
        with (
            path.open(newline="", encoding="utf-8-sig") as fh,
            raw.open("wb") as out,
            label_path.open("wb") as label_out,
        ):
            lines = BoundedLines(fh, limits.max_csv_line_bytes, limits.max_table_columns)
            reader = csv.reader(lines)
            header = [h.strip() for h in next(reader, [])]
            label_at, feature_at = _csv_columns(header, label_column)
            _check_row((len(feature_at),), limits)
            lines.next_record(max_cells=len(header))
            for number, row in enumerate(reader, start=2):
                lines.next_record()
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise _reject(
                        f"row {number} has {len(row)} cells but the header has {len(header)}; "
                        "every row needs one value per column"
                    )
                features.extend(_number(row[i], number, header[i]) for i in feature_at)
                if label_at is not None:
                    labels.append(_checked_label(row[label_at], number))
                rows += 1
                if len(features) * 8 >= _CHUNK_BYTES:
                    _check_decoded(rows, len(feature_at), budget)
                    features.tofile(out)
                    labels.tofile(label_out)
                    del features[:], labels[:]
            features.tofile(out)
            labels.tofile(label_out)
    except UnicodeDecodeError as exc:
        raise _reject("the CSV is not UTF-8 text; save it as UTF-8") from exc
    except (csv.Error, RecordTooLarge) as exc:
        raise _reject(f"the CSV could not be parsed: {str(exc)[:400]}") from exc
    shape = (len(feature_at),)
    y = LabelFile(label_path, np.dtype(np.int64), rows) if label_at is not None else None
    return _Features(rows, shape, _raw_chunks(raw, np.dtype(np.float64), rows, shape), y)


def _check_decoded(rows: int, features: int, budget: int) -> None:
    """The canonical float32 form of so many rows within what the upload may decode to."""
    if rows * features * 4 > budget:
        raise _reject(
            f"the rows decode to more than {budget:,} bytes as float32 (at most "
            "DISTILLERY_MAX_DECODED_BYTES, and 1000 times the upload); upload the data in parts"
        )


def _checked_label(cell: str, row: int) -> int:
    value = _label(cell, row)
    if value < 0:
        raise _reject(f"row {row}: label {cell!r} is negative; labels are class numbers 0..K-1")
    if value >= MAX_CLASSES:
        raise _reject(f"row {row}: label {cell[:40]!r} is too large (at most {MAX_CLASSES - 1})")
    return value


# ---- both formats -------------------------------------------------------------------------


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _write_canonical(out_dir: Path, found: _Features, labeled: bool) -> Path:
    """Stream x (and y, checked already) into an uncompressed NPZ as float32 (int64), counting
    values of x that are not finite."""
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
                member.write(converted.data)  # no copy: zipfile counts a buffer's nbytes
        if not_finite:
            raise _reject(
                f"`x` holds {not_finite} NaN or infinite values; drop or impute them first"
            )
        if too_large:
            raise _reject(f"`x` holds {too_large} values too large for float32; rescale them")
        if labeled and found.labels is not None:
            with archive.open("y.npy", "w", force_zip64=True) as member:
                shape = {"descr": "<i8", "fortran_order": False, "shape": (found.rows,)}
                npy_format.write_array_header_1_0(member, shape)
                write_int64(found.labels, member, MAX_CLASSES)
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
    limits: DatasetLimits,
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

            budget = decoded_budget(upload_bytes, limits)
            shape, y, classes = read_image_archive(
                archive, upload_bytes, size, image_mode, sink, budget, limits
            )
    except ImageArchiveError as exc:
        raise _reject(str(exc), "image_mode" if "image_mode" in str(exc) else "file") from exc
    y.tofile(work / "labels.i8")
    labels = LabelFile(work / "labels.i8", np.dtype(np.int64), len(y))
    chunks = _raw_chunks(raw, np.dtype(np.float32), len(y), shape)
    return _Features(len(y), shape, chunks, labels), classes


def _parse_parquet(
    path: Path, label_column: str | None, work: Path, limits: DatasetLimits
) -> tuple[_Features, str]:
    try:
        budget = decoded_budget(path.stat().st_size, limits)
        table = read_parquet(path, label_column, budget, limits, work)
    except TableError as exc:
        raise _reject(str(exc), exc.field) from exc
    shape = (len(table.features),)

    def checked() -> Iterator[np.ndarray]:  # pyarrow's errors while reading, as refusals
        try:
            yield from table.chunks
        except TableError as exc:
            raise _reject(str(exc), exc.field) from exc

    labels = LabelFile(table.labels, np.dtype(np.float64), table.rows) if table.labels else None
    found = _Features(table.rows, shape, checked(), labels)
    return found, f"the label column {table.label or 'label'!r}"


def _read_any(
    path: Path,
    filename: str,
    work: Path,
    label_column: str | None,
    image_size: str | None,
    image_mode: str,
    limits: DatasetLimits,
) -> tuple[str, _Features, list[str] | None, str]:
    """Sniff the format and parse: (format, features, class names, what to call the labels)."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise _reject("the file is empty")
    size = path.stat().st_size
    if head.startswith(_ZIP_MAGICS):
        with _open_zip(path, limits) as archive:
            if _is_image_archive(archive):
                found, classes = _parse_images(archive, size, image_size, image_mode, work, limits)
                return "images", found, classes, "the class folders"
            return "npz", _parse_npz(archive, size, work, limits), None, "`y`"
    if head.startswith(PARQUET_MAGIC):
        found, where = _parse_parquet(path, label_column, work, limits)
        return "parquet", found, None, where
    if filename.lower().endswith(".csv") or _looks_like_text(head):
        found = _parse_csv(path, label_column, work, limits, decoded_budget(size, limits))
        return "csv", found, None, f"the label column {label_column or 'label'!r}"
    if head.startswith(_NPY_MAGIC):
        raise _reject("this is a bare .npy array; save x (and y) together with np.savez")
    if filename.lower().endswith(".npz"):
        raise _reject("the file is not a zip archive, so not an NPZ; it may be truncated")
    raise _reject("the file is neither an NPZ archive nor UTF-8 CSV text")


def _parse_text_upload(
    path: Path,
    filename: str,
    out_dir: Path,
    text: TextColumns | None,
    label_column: str | None,
    limits: DatasetLimits,
) -> ParsedDataset | None:
    """A text dataset (app/datasets/parsers/text.py), or None when the upload is not one."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head or head.startswith(_ZIP_MAGICS) or head.startswith(_NPY_MAGIC):
        return None
    fmt = detect_text(path, filename, head, text is not None, limits)
    if fmt is None:
        return None
    given = text or TextColumns()
    columns = TextColumns(given.text, given.pair, label_column)
    try:
        parsed = parse_text(
            path, fmt, out_dir, columns, limits, decoded_budget(path.stat().st_size, limits)
        )
    except TextRejected as exc:
        raise DatasetRejected(exc.field, exc.message) from exc
    return ParsedDataset(
        format=parsed.format,
        rows=parsed.rows,
        feature_shape=(),
        num_classes=parsed.num_classes,
        labeled=parsed.labeled,
        class_counts=parsed.class_counts,
        canonical_path=parsed.canonical_path,
        class_names=parsed.class_names,
    )


def parse_dataset(
    path: Path,
    filename: str,
    out_dir: Path,
    label_column: str | None = None,
    image_size: str | None = None,
    image_mode: str = "L",
    limits: DatasetLimits | None = None,
    text: TextColumns | None = None,
) -> ParsedDataset:
    """Check an uploaded dataset and write it to `out_dir` as an uncompressed NPZ holding
    `x` (float32, (N, *feature_shape)) and, when labeled, `y` (int64, (N,)).

    Memory stays bounded whatever the size of the upload (`limits`, by default the settings'
    defaults): arrays are unpacked to disk, counted as they come out, and converted a few MB
    at a time; labels too."""
    limits = limits or DatasetLimits()
    out_dir.mkdir(parents=True, exist_ok=True)
    found_text = _parse_text_upload(path, filename, out_dir, text, label_column, limits)
    if found_text is not None:
        return found_text
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=".work-"))
    try:
        fmt, found, class_names, where = _read_any(
            path, filename, work, label_column, image_size, image_mode, limits
        )
        _check_shape(found, limits, decoded_budget(path.stat().st_size, limits))
        summary = None
        if found.labels is not None:
            try:
                summary = summarize(found.labels, where, MAX_CLASSES)
            except LabelsRejected as exc:
                raise _reject(str(exc)) from exc
        canonical = _write_canonical(out_dir, found, summary is not None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ParsedDataset(
        format=fmt,
        rows=found.rows,
        feature_shape=found.feature_shape,
        num_classes=summary.num_classes if summary is not None else None,
        labeled=summary is not None,
        class_counts=summary.class_counts if summary is not None else None,
        canonical_path=canonical,
        class_names=class_names,
    )


def _check_shape(found: _Features, limits: DatasetLimits, budget: int) -> None:
    if found.rows == 0:
        raise _reject("the dataset is empty (0 rows)")
    if 0 in found.feature_shape:
        shape = [found.rows, *found.feature_shape]
        raise _reject(f"`x` has shape {shape}; every row needs at least one feature")
    if found.rows > MAX_ROWS:
        raise _reject(f"the dataset has {found.rows:,} rows, over {MAX_ROWS:,}; upload it in parts")
    _check_row(found.feature_shape, limits)
    _check_decoded(found.rows, math.prod(found.feature_shape), budget)


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a canonical dataset written by parse_dataset: (x float32, y int64 or None)."""
    with np.load(path, allow_pickle=False) as data:
        x = data["x"].astype(np.float32, copy=False)
        y = data["y"].astype(np.int64, copy=False) if "y" in data.files else None
    return x, y
