"""What a report says about a classifier: calibration, per-class scores, and speed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ECE_BINS = 15


def accuracy(logits: np.ndarray, y: np.ndarray | None) -> float | None:
    if y is None or len(y) == 0:
        return None
    return float((logits.argmax(axis=1) == y).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows where two models pick the same class."""
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean()) if len(a) else 0.0


def gap_closed(student: float | None, scratch: float | None, teacher: float | None) -> float | None:
    """(acc_kd - acc_scratch) / (acc_teacher - acc_scratch), docs/methods.md §8."""
    if student is None or scratch is None or teacher is None or teacher <= scratch:
        return None
    return (student - scratch) / (teacher - scratch)


@dataclass(frozen=True)
class TestLogits:
    """Teacher, distilled student and scratch student on the test split, and its labels."""

    y: np.ndarray | None
    teacher: np.ndarray
    student: np.ndarray
    scratch: np.ndarray | None

    @property
    def teacher_accuracy(self) -> float | None:
        return accuracy(self.teacher, self.y)

    @property
    def student_accuracy(self) -> float | None:
        return accuracy(self.student, self.y)

    @property
    def scratch_accuracy(self) -> float | None:
        return accuracy(self.scratch, self.y) if self.scratch is not None else None

    @property
    def gap_closed(self) -> float | None:
        return gap_closed(self.student_accuracy, self.scratch_accuracy, self.teacher_accuracy)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    values: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return values


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        chosen = (confidence > low) & (confidence <= high)
        if chosen.any():
            error += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(error)


@dataclass(frozen=True)
class ClassReport:
    accuracy: float
    nll: float
    ece: float
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]]  # rows: the true class


def classification_report(logits: np.ndarray, y: np.ndarray | None) -> ClassReport | None:
    """Accuracy, NLL, ECE (15 bins), per-class accuracy and the confusion matrix."""
    if y is None or len(y) == 0:
        return None
    log_probs = _log_softmax(logits.astype(np.float64))
    classes = logits.shape[1]
    predicted = log_probs.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = {
        str(c): (float(confusion[c, c] / support[c]) if support[c] else None)
        for c in range(classes)
    }
    return ClassReport(
        accuracy=float((predicted == y).mean()),
        nll=float(-log_probs[np.arange(len(y)), y].mean()),
        ece=expected_calibration_error(np.exp(log_probs), y),
        per_class_accuracy=per_class,
        confusion_matrix=confusion.tolist(),
    )


def median_latency_ms(run: Callable[[], Any], repeats: int = 30, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def latency_feed(session: Any, input_shape: tuple[int, ...], batch: int) -> dict[str, np.ndarray]:
    """Inputs of `batch` rows for a model: random floats, or for a text model (inputs
    input_ids, attention_mask, ...) random token ids of input_shape[-1] tokens."""
    rng = np.random.default_rng(0)
    names = [i.name for i in session.get_inputs()]
    if names and all(n in TEXT_INPUTS for n in names):
        length = input_shape[-1]
        feed = {
            "input_ids": rng.integers(1, 100, (batch, length)).astype(np.int64),
            "attention_mask": np.ones((batch, length), np.int64),
            "token_type_ids": np.zeros((batch, length), np.int64),
        }
        return {n: feed[n] for n in names}
    return {names[0]: rng.standard_normal((batch, *input_shape)).astype(np.float32)}


def onnx_latency_ms(path: Path, input_shape: tuple[int, ...], batch: int) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = latency_feed(session, input_shape, batch)
    return median_latency_ms(lambda: session.run(None, feed))


def teacher_latency_ms(
    logits: Callable[[np.ndarray], Any], input_shape: tuple[int, ...], batch: int
) -> float:
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    return median_latency_ms(lambda: logits(x))
