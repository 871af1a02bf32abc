"""Teachers: one protocol (base.py), one module per format (ONNX, torch.export .pt2), and the
teachers a job composes from them (an ensemble; assistants trained in the job)."""

from worker.engine.teachers.base import (
    EXPORT_ADVICE,
    OutputKind,
    Teacher,
    TeacherRejected,
    looks_like_probabilities,
    probabilities_to_logits,
    run_in_chunks,
)
from worker.engine.teachers.loading import inspect_teacher, load_teacher, sniff_format

__all__ = [
    "EXPORT_ADVICE",
    "OutputKind",
    "Teacher",
    "TeacherRejected",
    "inspect_teacher",
    "load_teacher",
    "looks_like_probabilities",
    "probabilities_to_logits",
    "run_in_chunks",
    "sniff_format",
]
