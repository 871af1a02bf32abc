"""Stage `export`: the student (and the scratch baseline, and each assistant) as ONNX,
checked in onnxruntime against PyTorch, and as safetensors; then the latency of student and
teacher on this worker."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from app.jobs.metrics import BatchLatency, Int8Report, Latency
from worker.engine import MethodResult, OnnxExport, Teacher, export_onnx, save_safetensors
from worker.engine.evaluation import onnx_latency_ms, teacher_latency_ms
from worker.engine.text.export import export_text_onnx
from worker.pipeline.context import JobRun
from worker.pipeline.int8 import INT8_NAME, quantize_student
from worker.pipeline.plan import TrainingPlan

LATENCY_REPEATS = 30
ONNX_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Exported:
    student: OnnxExport
    latency: Latency
    int8: Int8Report
    # Every file to deliver, by artifact name, with its media type.
    files: dict[str, str] = field(default_factory=dict)
    assistants: dict[int, OnnxExport] = field(default_factory=dict)


def measure_latency(
    student_onnx: Path, teacher: Teacher, row_shape: tuple[int, ...] | None = None
) -> Latency:
    """Median latency on this worker of the ONNX student and the teacher in its own runtime,
    at batch 1 and 64 (and 32, for text), on rows of the job's shape."""
    shape = row_shape or teacher.input_shape
    batches: dict[int, BatchLatency] = {}
    for batch in (1, 32, 64) if row_shape is not None else (1, 64):
        student_ms = onnx_latency_ms(student_onnx, shape, batch)
        # A sandboxed teacher times itself inside its process, so pipes are not in the figure.
        timed_inside = getattr(teacher, "latency_ms", None)
        teacher_ms = (
            float(timed_inside(batch, LATENCY_REPEATS, shape))
            if callable(timed_inside)
            else teacher_latency_ms(teacher.logits, shape, batch)
        )
        speedup = teacher_ms / student_ms if student_ms > 0 else None
        batches[batch] = BatchLatency(student_onnx=student_ms, teacher=teacher_ms, speedup=speedup)
    return Latency(
        teacher_runtime=teacher.format,
        repeats=LATENCY_REPEATS,
        batch_1=batches[1],
        batch_64=batches[64],
        batch_32=batches.get(32),
    )


def export(run: JobRun, plan: TrainingPlan, result: MethodResult) -> Exported:
    run.stage("exporting")
    run.workdir.mkdir(parents=True, exist_ok=True)
    shape, sample, text = result.teacher.input_shape, plan.splits.test.x[:64], plan.text

    def save(module: nn.Module, name: str) -> OnnxExport:
        if text is not None:
            return export_text_onnx(module, run.workdir / name, sample, text.token_types)
        return export_onnx(module, shape, run.workdir / name, sample)

    student = save(result.outcome.student, "student.onnx")
    save_safetensors(result.outcome.student, run.workdir / "student.safetensors")
    files = {"student.onnx": ONNX_MEDIA_TYPE, "student.safetensors": ONNX_MEDIA_TYPE}
    scratch = result.outcome.scratch_student
    if scratch is not None:  # the baseline, so a user can ship it when it does better
        save(scratch, "scratch.onnx")
        files["scratch.onnx"] = ONNX_MEDIA_TYPE
    assistants: dict[int, OnnxExport] = {}
    for step in result.assistants:
        name = f"assistant_{step.number}.onnx"
        assistants[step.number] = save(step.module, name)
        files[name] = ONNX_MEDIA_TYPE
    if text is not None:  # tokenize for the student exactly as for the teacher
        shutil.copyfile(text.tokenizer_json, run.workdir / "tokenizer.json")
        files["tokenizer.json"] = "application/json"
    run.stage("measuring")
    row_shape = tuple(int(d) for d in sample.shape[1:]) if text is not None else None
    latency = measure_latency(student.path, result.teacher, row_shape)
    int8 = quantize_student(run, plan, student, latency, result.outcome.test.teacher)
    if int8.status == "built":
        files[INT8_NAME] = ONNX_MEDIA_TYPE
    return Exported(student, latency, int8, files, assistants)
