"""Never worse than scratch without saying so: on the validation rows (never the test rows),
is the distilled student better than the same student trained from scratch, and is the
teacher, as the job sees it (through phi, or the ensemble's mean), better than scratch at all?

The answer is `metrics.recommendation` (which ONNX to ship, and why) and `metrics.warnings`,
which the report's verdict and the job's events repeat."""

from __future__ import annotations

from collections.abc import Sequence

from app.jobs.metrics import EnsembleMember, Recommendation, ValidationScores
from worker.engine import DistillOutcome


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def member_warnings(members: Sequence[EnsembleMember], scratch: float | None) -> list[str]:
    """An ensemble member below the scratch student on the validation rows pulls the
    ensemble's targets away from the labels: name it, so it can be left out."""
    if scratch is None:
        return []
    return [
        f"ensemble member {m.id} scores {_pct(m.validation_accuracy)} on the validation rows, "
        f"below the student trained from scratch ({_pct(scratch)}): leave it out of "
        "teacher_ids, or raise method.alpha to weigh the labels more."
        for m in members
        if m.validation_accuracy is not None and m.validation_accuracy < scratch
    ]


def recommend(outcome: DistillOutcome) -> tuple[Recommendation | None, list[str]]:
    scores = ValidationScores(
        teacher=outcome.teacher_validation_accuracy,
        student=outcome.validation_accuracy,
        scratch=outcome.scratch_validation_accuracy,
    )
    warnings: list[str] = []
    teacher, student, scratch = scores.teacher, scores.student, scores.scratch
    if teacher is not None and scratch is not None and teacher < scratch:
        warnings.append(
            f"the teacher, as this job feeds it, scores {_pct(teacher)} on the validation "
            f"rows, below the student trained from scratch ({_pct(scratch)}): its outputs "
            "mislead the student. Check that the teacher was trained for these inputs (and, "
            "for a cross-domain job, that phi keeps what the teacher needs), or raise "
            "method.alpha to weigh the labels more."
        )
    if student is None or scratch is None:
        return None, warnings
    if student < scratch:
        reason = (
            f"on the validation rows the student trained from scratch ({_pct(scratch)}) beats "
            f"the distilled one ({_pct(student)}): ship scratch.onnx, or give the distilled "
            "student more to learn from (a transfer set, more epochs)"
        )
        warnings.append(f"distillation did not pay: {reason}.")
        return Recommendation(ship="scratch", reason=reason, validation=scores), warnings
    reason = (
        f"on the validation rows the distilled student scores {_pct(student)}, the student "
        f"trained from scratch {_pct(scratch)}"
    )
    return Recommendation(ship="student", reason=reason, validation=scores), warnings
