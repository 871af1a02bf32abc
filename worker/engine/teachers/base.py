"""What every teacher is (the Teacher protocol), and the helpers the formats share.

An upload is hostile: nothing here unpickles it or runs code it carries."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from worker.engine.errors import JobFailure

EXPORT_ADVICE = (
    "export the model with torch.onnx.export(model, (example,), 'teacher.onnx', dynamo=True, "
    "external_data=False) or save a program with torch.export.save(torch.export.export(model, "
    "(example,)), 'teacher.pt2')"
)
OutputKind = Literal["logits", "probabilities"]
# Rows per batch of a teacher run in-process when the caller names none; a job's teachers
# run in their own process, in batches sized from the model and its memory (runtime.py).
DEFAULT_BATCH_ROWS = 512


class TeacherRejected(JobFailure):
    """The file cannot serve as a teacher; the message says why and what to do."""

    code = "teacher_invalid"


class Teacher(Protocol):
    format: str
    input_shape: tuple[int, ...]
    num_classes: int
    parameters: int
    output_name: str
    output_kind: OutputKind
    fingerprint: str | None  # sha256 of the file: keys the cache of its outputs

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits for x, in batches of batch_size rows (None: the teacher's own choice)."""
        ...


def looks_like_probabilities(rows: np.ndarray) -> bool:
    if rows.ndim != 2 or rows.size == 0 or not np.isfinite(rows).all():
        return False
    in_range = bool((rows >= -1e-6).all() and (rows <= 1 + 1e-6).all())
    return in_range and bool(np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def probabilities_to_logits(p: np.ndarray) -> np.ndarray:
    values: np.ndarray = np.log(np.clip(p, 1e-7, 1.0)).astype(np.float32)
    return values


def run_in_chunks(fn: Any, x: np.ndarray, chunk: int, fixed_batch: int | None) -> np.ndarray:
    """Apply fn to x in chunks; a model with a fixed batch size gets padded chunks of it."""
    size = fixed_batch or chunk
    outputs = []
    for start in range(0, len(x), size):
        part = x[start : start + size]
        rows = len(part)
        if fixed_batch and rows < fixed_batch:
            pad = np.zeros((fixed_batch - rows, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, pad])
        outputs.append(np.asarray(fn(part))[:rows])
    return np.concatenate(outputs).astype(np.float32, copy=False)
