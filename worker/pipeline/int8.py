"""Part of stage `export`: student.int8.onnx, measured beside the fp32 student (accuracy on
the validation and test rows, agreement, size, latency at batch 1 and 64), and which to ship.
It never fails the job: a quantization that fails or does not load is reported instead."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from app.jobs.metrics import Int8Latency, Int8Report, Latency
from worker.engine import ArraySplit, OnnxExport, accuracy, agreement
from worker.engine.evaluation import onnx_latency_ms
from worker.engine.quantize import Int8Student, QuantizationFailed, mode_for, onnx_logits
from worker.engine.quantize import quantize_student as build
from worker.pipeline.context import JobRun
from worker.pipeline.plan import TrainingPlan

log = logging.getLogger(__name__)

INT8_NAME = "student.int8.onnx"
MAX_ACCURACY_DROP = 0.005  # half a point


def _latency(built: Int8Student, shape: tuple[int, ...], fp32: Latency) -> dict[str, Int8Latency]:
    found = {}
    for key, batch, fp32_ms in (
        ("batch_1", 1, fp32.batch_1.student_onnx),
        ("batch_64", 64, fp32.batch_64.student_onnx),
    ):
        int8_ms = onnx_latency_ms(built.path, shape, batch)
        found[key] = Int8Latency(
            int8=int8_ms, fp32=fp32_ms, speedup=fp32_ms / int8_ms if int8_ms > 0 else None
        )
    return found


def _accuracy(path: Path, split: ArraySplit) -> float | None:
    return accuracy(onnx_logits(path, split.x), split.y) if len(split.x) else None


def _ship(report: Int8Report) -> tuple[Literal["int8", "fp32"], str]:
    """int8 when it is faster at batch 1 and 64 and within half a point of fp32's validation
    accuracy (agreement with fp32 where the validation rows have no labels)."""
    speed = ", ".join(
        f"{key.replace('_', ' ')} {timing.speedup or 0.0:.2f}x"
        for key, timing in report.latency_ms.items()
    )
    faster = all((t.speedup or 0.0) > 1.0 for t in report.latency_ms.values())
    int8, fp32 = report.validation_accuracy, report.fp32_validation_accuracy
    if int8 is None or fp32 is None:
        int8, fp32 = report.agreement_with_fp32 or 0.0, 1.0
    drop = 100 * (fp32 - int8)
    if not faster:
        return "fp32", f"int8 is not faster at both batch sizes ({speed} against fp32)"
    if drop > 100 * MAX_ACCURACY_DROP:
        return "fp32", f"int8 is faster ({speed}) but loses {drop:.1f} points on validation"
    return "int8", f"int8 is faster ({speed}) and within half a point on validation ({-drop:+.1f})"


def quantize_student(
    run: JobRun, plan: TrainingPlan, fp32: OnnxExport, latency: Latency, teacher_test: np.ndarray
) -> Int8Report:
    if not run.spec.quantize:
        return Int8Report(status="off", reason="the job asked for none (quantize: false)")
    run.stage("quantizing")
    mode = mode_for(plan.config.student.architecture)
    try:
        built = build(fp32.path, run.workdir / INT8_NAME, mode, plan.splits.train.x)
    except QuantizationFailed as exc:
        log.warning("int8 quantization failed: %s", exc)
        return Int8Report(status="failed", mode=mode, error=str(exc), reason="it failed")
    test, validation = plan.splits.test, plan.splits.validation
    int8_test, fp32_test = onnx_logits(built.path, test.x), onnx_logits(fp32.path, test.x)
    shape = tuple(int(d) for d in test.x.shape[1:])
    report = Int8Report(
        status="built",
        mode=mode,
        bytes=built.bytes,
        fp32_bytes=fp32.bytes,
        accuracy=accuracy(int8_test, test.y),
        fp32_accuracy=accuracy(fp32_test, test.y),
        validation_accuracy=_accuracy(built.path, validation),
        fp32_validation_accuracy=_accuracy(fp32.path, validation),
        agreement_with_fp32=agreement(int8_test, fp32_test),
        agreement_with_teacher=agreement(int8_test, teacher_test),
        latency_ms=_latency(built, shape, latency),
    )
    ship, reason = _ship(report)
    return report.model_copy(update={"ship": ship, "reason": reason})
