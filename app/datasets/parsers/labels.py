"""Labels as the parsers leave them: a raw array on disk, checked and counted a chunk at a time.

A dataset may have a billion rows (a 4 GiB column of bytes), so its labels are never one array
in memory: eight bytes a row would be gigabytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

_CHUNK_VALUES = 512 * 1024


class LabelsRejected(ValueError):
    """Labels that cannot be class numbers; the message says which and why."""


@dataclass(frozen=True)
class LabelFile:
    """`count` values of `dtype`, C order, at `offset` in `path`."""

    path: Path
    dtype: np.dtype
    count: int
    offset: int = 0

    def chunks(self) -> Iterator[np.ndarray]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            for start in range(0, self.count, _CHUNK_VALUES):
                n = min(_CHUNK_VALUES, self.count - start)
                chunk = np.fromfile(fh, dtype=self.dtype, count=n)
                if len(chunk) != n:
                    raise LabelsRejected("the labels are truncated")
                yield chunk


@dataclass(frozen=True)
class LabelSummary:
    num_classes: int
    class_counts: dict[int, int]


def _as_classes(chunk: np.ndarray, where: str, max_classes: int) -> np.ndarray:
    if chunk.dtype.kind == "f":
        if not bool(np.isfinite(chunk).all()) or not bool(np.all(np.mod(chunk, 1) == 0)):
            raise LabelsRejected(
                f"{where} holds non-integer values; labels are class numbers 0..K-1"
            )
    elif chunk.dtype.kind not in "biu":
        raise LabelsRejected(f"{where} has dtype {chunk.dtype}; labels must be integers")
    if len(chunk) and chunk.min() < 0:
        raise LabelsRejected(
            f"{where} holds negative labels (min {chunk.min()}); labels are 0..K-1"
        )
    if len(chunk) and chunk.max() >= max_classes:
        raise LabelsRejected(
            f"{where} holds a label of {chunk.max()}; at most {max_classes - 1} is accepted"
        )
    return chunk.astype(np.int64)


def summarize(labels: LabelFile, where: str, max_classes: int) -> LabelSummary:
    """Check every label and count each class, a chunk at a time."""
    counts = np.zeros(0, np.int64)
    for chunk in labels.chunks():
        found = np.bincount(_as_classes(chunk, where, max_classes))
        if len(found) > len(counts):
            found[: len(counts)] += counts
            counts = found
        else:
            counts[: len(found)] += found
    present = np.flatnonzero(counts)
    return LabelSummary(
        num_classes=int(present[-1]) + 1 if len(present) else 0,
        class_counts={int(c): int(counts[c]) for c in present},
    )


def write_int64(labels: LabelFile, out: IO[bytes], max_classes: int) -> None:
    """The labels as int64 values, a chunk at a time (after `summarize` accepted them)."""
    for chunk in labels.chunks():
        out.write(_as_classes(chunk, "the labels", max_classes).astype("<i8").tobytes())
