"""Never worse than scratch without saying so: the recommendation and the warnings, decided on
the validation curves' last epochs."""

from __future__ import annotations

import numpy as np
from torch import nn

from worker.engine import DistillOutcome, EpochRecord, TestLogits, TransferCounts
from worker.pipeline.verdict import recommend


def _curve(validation: float) -> list[EpochRecord]:
    return [EpochRecord(e, 1.0, 1.0, 1.0, validation - 0.1 + 0.05 * e, 0.1) for e in (1, 2)]


def _outcome(teacher: float | None, student: float, scratch: float | None) -> DistillOutcome:
    z = np.zeros((2, 3), np.float32)
    return DistillOutcome(
        student=nn.Linear(3, 3),
        history=_curve(student),
        test=TestLogits(None, z, z, None),
        teacher_parameters=100,
        student_parameters=10,
        train_seconds=1.0,
        device="cpu",
        transfer=TransferCounts(10, 0, {}),
        baseline="trained" if scratch is not None else "off",
        scratch_history=_curve(scratch) if scratch is not None else [],
        teacher_validation_accuracy=teacher,
    )


def test_a_student_that_beats_scratch_is_recommended_without_warnings() -> None:
    advice, warnings = recommend(_outcome(teacher=0.95, student=0.90, scratch=0.85))
    assert advice is not None and advice.ship == "student" and warnings == []
    assert advice.validation.student == 0.90 and advice.validation.scratch == 0.85
    assert "90.0%" in advice.reason and "85.0%" in advice.reason


def test_scratch_is_recommended_and_warned_about_when_it_does_better() -> None:
    advice, warnings = recommend(_outcome(teacher=0.95, student=0.80, scratch=0.85))
    assert advice is not None and advice.ship == "scratch"
    assert "scratch.onnx" in advice.reason
    assert len(warnings) == 1 and warnings[0].startswith("distillation did not pay")


def test_a_teacher_below_scratch_is_named() -> None:
    advice, warnings = recommend(_outcome(teacher=0.30, student=0.70, scratch=0.85))
    assert advice is not None and advice.ship == "scratch"
    assert "30.0%" in warnings[0] and "mislead the student" in warnings[0]
    assert len(warnings) == 2


def test_without_a_baseline_there_is_nothing_to_recommend() -> None:
    advice, warnings = recommend(_outcome(teacher=0.95, student=0.90, scratch=None))
    assert advice is None and warnings == []
