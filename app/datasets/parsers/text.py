"""Text datasets: CSV, JSONL or Parquet with a text column (and optionally a second text
column for sentence pairs, and a label column of class ids or class names), checked and
written as one canonical Parquet file (`text`, [`text_pair`], [`label`]).

Bounded as every parser is (README, "Security"): CSV records and JSONL lines are read with
a length cap before they are split, Parquet is read a row group at a time after its metadata
says how large each is, and the texts together may not decode past the upload's budget.
Tokenizing is the job's work, with the teacher's own tokenizer (worker/engine/text)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.datasets.parsers.csvlines import BoundedLines, RecordTooLarge
from app.datasets.parsers.limits import MAX_ROWS, DatasetLimits

TEXT_FORMATS = ("text-csv", "text-jsonl", "text-parquet")
CANONICAL_TEXT_NAME = "dataset.parquet"
MAX_TEXT_CHARS = 100_000  # one text (a few pages); longer rows are refused, naming the row
MAX_CLASSES = 100_000
BATCH_ROWS = 8192
BATCH_CHARS = 4 * 1024 * 1024  # a batch is written when it holds this many characters


class TextRejected(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class TextColumns:
    text: str = "text"
    pair: str | None = None
    label: str | None = None  # None: `label` when the file has it, else unlabeled


@dataclass(frozen=True)
class ParsedText:
    format: str
    rows: int
    labeled: bool
    class_counts: dict[str, int] | None
    class_names: list[str] | None  # labels given as names (sorted), else None
    num_classes: int | None
    canonical_path: Path


class _Writer:
    """Rows to the canonical Parquet file, a batch at a time; labels counted as they pass."""

    def __init__(self, path: Path, pair: bool, labeled: bool, budget: int) -> None:
        self.path, self.pair, self.labeled, self.budget = path, pair, labeled, budget
        self.texts: list[str] = []
        self.pairs: list[str] = []
        self.labels: list[str] = []
        self.counts: Counter[str] = Counter()
        self.rows = self.chars = self.pending = 0
        self._writer: Any = None

    def add(self, row: int, text: Any, pair: Any, label: Any) -> None:
        self.texts.append(_text(text, row, "text_column"))
        if self.pair:
            self.pairs.append(_text(pair, row, "text_pair_column"))
        if self.labeled:
            name = _label(label, row)
            self.labels.append(name)
            self.counts[name] += 1
            if len(self.counts) > MAX_CLASSES:
                raise TextRejected("label_column", f"more than {MAX_CLASSES:,} distinct labels")
        self.rows += 1
        added = len(self.texts[-1]) + (len(self.pairs[-1]) if self.pair else 0)
        self.chars += added
        self.pending += added
        if self.rows > MAX_ROWS:
            raise TextRejected("file", f"more than {MAX_ROWS:,} rows; upload it in parts")
        if 4 * self.chars > self.budget:
            raise TextRejected(
                "file",
                f"the texts decode to more than {self.budget:,} bytes "
                "(DISTILLERY_MAX_DECODED_BYTES, or 64x the upload); upload it in parts",
            )
        if len(self.texts) >= BATCH_ROWS or self.pending >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.texts and self._writer is not None:
            return
        columns: dict[str, Any] = {"text": pa.array(self.texts, pa.string())}
        if self.pair:
            columns["text_pair"] = pa.array(self.pairs, pa.string())
        if self.labeled:
            columns["label"] = pa.array(self.labels, pa.string())
        table = pa.table(columns)
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), table.schema)
        self._writer.write_table(table)
        self.texts, self.pairs, self.labels = [], [], []
        self.pending = 0

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()


def _text(value: Any, row: int, field: str) -> str:
    if not isinstance(value, str):
        raise TextRejected(field, f"row {row}: the text is {type(value).__name__}, not a string")
    text = value.strip()
    if not text:
        raise TextRejected(field, f"row {row}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TextRejected(
            field, f"row {row}: the text has {len(text):,} characters, over {MAX_TEXT_CHARS:,}"
        )
    return text


def _label(value: Any, row: int) -> str:
    if isinstance(value, bool) or value is None:
        raise TextRejected("label_column", f"row {row}: the label is missing")
    if isinstance(value, int):
        if value < 0:
            raise TextRejected("label_column", f"row {row}: label {value} is negative")
        return str(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return str(int(value))
    text = str(value).strip()
    if not text or len(text) > 255:
        raise TextRejected(
            "label_column", f"row {row}: a label is a class id or a name of 1 to 255 characters"
        )
    return text


def _column(header: list[str], name: str | None, field: str, required: bool) -> int | None:
    if name is None:
        return None
    if name in header:
        return header.index(name)
    if required:
        raise TextRejected(field, f"the file has no column {name!r}; its columns: {header[:20]}")
    return None


def _csv(path: Path, columns: TextColumns, out: _Writer | None, limits: DatasetLimits) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        lines = BoundedLines(fh, limits.max_csv_line_bytes, limits.max_table_columns)
        reader = csv.reader(lines)
        header = [h.strip() for h in next(reader, [])]
        if out is None:
            return header
        text_at = _column(header, columns.text, "text_column", True)
        pair_at = _column(header, columns.pair, "text_pair_column", True)
        label_at = _column(
            header, columns.label or "label", "label_column", columns.label is not None
        )
        lines.next_record(max_cells=len(header))
        for number, row in enumerate(reader, start=2):
            lines.next_record()
            if not row:
                continue
            if len(row) != len(header):
                raise TextRejected(
                    "file", f"row {number} has {len(row)} cells, the header {len(header)}"
                )
            out.add(
                number,
                row[text_at] if text_at is not None else None,
                row[pair_at] if pair_at is not None else None,
                row[label_at] if label_at is not None else None,
            )
    return header


def _jsonl(path: Path, columns: TextColumns, out: _Writer, limits: DatasetLimits) -> None:
    label = columns.label or "label"
    with path.open(encoding="utf-8-sig") as fh:
        number = 0
        while line := fh.readline(limits.max_csv_line_bytes + 1):
            number += 1
            if len(line) > limits.max_csv_line_bytes:
                raise TextRejected(
                    "file",
                    f"line {number} is longer than {limits.max_csv_line_bytes:,} characters "
                    "(DISTILLERY_MAX_CSV_LINE_BYTES)",
                )
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise TextRejected("file", f"line {number} is not a JSON object: {exc}") from exc
            if not isinstance(record, dict):
                raise TextRejected("file", f"line {number} is not a JSON object")
            if columns.text not in record:
                raise TextRejected("text_column", f"line {number} has no {columns.text!r}")
            if columns.pair is not None and columns.pair not in record:
                raise TextRejected("text_pair_column", f"line {number} has no {columns.pair!r}")
            if columns.label is not None and label not in record:
                raise TextRejected("label_column", f"line {number} has no {label!r}")
            out.add(number, record[columns.text], record.get(columns.pair or ""), record.get(label))


def _parquet(path: Path, columns: TextColumns, out: _Writer, budget: int) -> None:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(str(path))
    except Exception as exc:
        raise TextRejected("file", f"the Parquet file cannot be read: {str(exc)[:200]}") from exc
    names = file.schema_arrow.names
    wanted = [columns.text] + ([columns.pair] if columns.pair else [])
    for field, name in zip(("text_column", "text_pair_column"), wanted, strict=False):
        if name not in names:
            raise TextRejected(field, f"the file has no column {name!r}; its columns: {names[:20]}")
    label = columns.label or "label"
    if columns.label is not None and label not in names:
        raise TextRejected("label_column", f"the file has no column {label!r}")
    read = wanted + ([label] if label in names else [])
    number = 1
    for group in range(file.num_row_groups):
        meta = file.metadata.row_group(group)
        if meta.total_byte_size > budget:
            raise TextRejected(
                "file",
                f"row group {group} decodes to {meta.total_byte_size:,} bytes, over {budget:,}",
            )
        table = file.read_row_group(group, columns=read).to_pydict()
        for i in range(len(table[columns.text])):
            number += 1
            out.add(
                number,
                table[columns.text][i],
                table[columns.pair][i] if columns.pair else None,
                table[label][i] if label in table else None,
            )


def detect_text(
    path: Path, filename: str, head: bytes, columns_given: bool, limits: DatasetLimits
) -> str | None:
    """The text format of an upload, or None when it is not a text dataset: a JSONL file, or
    a CSV or Parquet table with the text column (`text`, or the text_column given)."""
    from app.datasets.parsers.parquet import PARQUET_MAGIC

    name = filename.lower()
    if head.startswith(PARQUET_MAGIC):
        if columns_given:
            return "text-parquet"
        try:
            import pyarrow.parquet as pq

            field = pq.ParquetFile(str(path)).schema_arrow.field("text")
        except Exception:
            return None
        return "text-parquet" if str(field.type) in ("string", "large_string") else None
    if name.endswith((".jsonl", ".ndjson")) or head.lstrip().startswith(b"{"):
        return "text-jsonl"
    if columns_given:
        return "text-csv"
    try:
        header = _csv(path, TextColumns(), None, limits)
    except (UnicodeDecodeError, csv.Error, RecordTooLarge):
        return None
    return "text-csv" if "text" in header else None


def parse_text(
    path: Path, fmt: str, out_dir: Path, columns: TextColumns, limits: DatasetLimits, budget: int
) -> ParsedText:
    canonical = out_dir / CANONICAL_TEXT_NAME
    labeled = _has_labels(path, fmt, columns, limits)
    out = _Writer(canonical, columns.pair is not None, labeled, budget)
    try:
        if fmt == "text-csv":
            _csv(path, columns, out, limits)
        elif fmt == "text-jsonl":
            _jsonl(path, columns, out, limits)
        else:
            _parquet(path, columns, out, budget)
    except UnicodeDecodeError as exc:
        raise TextRejected("file", "the file is not UTF-8 text; save it as UTF-8") from exc
    except (csv.Error, RecordTooLarge) as exc:
        raise TextRejected("file", f"the CSV could not be parsed: {str(exc)[:300]}") from exc
    finally:
        out.close()
    if out.rows == 0:
        raise TextRejected("file", "the dataset has no rows")
    return _summary(fmt, out, canonical)


def _has_labels(path: Path, fmt: str, columns: TextColumns, limits: DatasetLimits) -> bool:
    """Labeled when the label column is named, or a `label` column is there."""
    if columns.label is not None:
        return True
    if fmt == "text-csv":
        return "label" in _csv(path, columns, None, limits)
    if fmt == "text-parquet":
        import pyarrow.parquet as pq

        return "label" in pq.ParquetFile(str(path)).schema_arrow.names
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline(limits.max_csv_line_bytes + 1)
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "label" in record


def _summary(fmt: str, out: _Writer, canonical: Path) -> ParsedText:
    if not out.labeled:
        return ParsedText(fmt, out.rows, False, None, None, None, canonical)
    ids = all(name.isdigit() for name in out.counts)
    names = None if ids else sorted(out.counts)
    classes = (max(int(n) for n in out.counts) + 1) if ids else len(out.counts)
    return ParsedText(fmt, out.rows, True, dict(out.counts), names, classes, canonical)


def load_texts(path: Path) -> tuple[list[str], list[str] | None, list[str] | None]:
    """A canonical text dataset: texts, pairs (or None), labels as written (or None)."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path)).to_pydict()
    return table["text"], table.get("text_pair"), table.get("label")
