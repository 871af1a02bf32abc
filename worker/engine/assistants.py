"""Teacher assistants (Mirzadeh et al., METHODS.md §3): distill in steps through models of
sizes between the teacher's and the student's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from worker.engine.config import DistillConfig, StudentSpec
from worker.engine.data import Splits
from worker.engine.evaluation import classification_report
from worker.engine.logit_cache import LogitCache, teacher_logits
from worker.engine.students import build_student, count_parameters
from worker.engine.teachers import OutputKind, Teacher
from worker.engine.training import (
    DistillOutcome,
    EpochRecord,
    accuracy,
    agreement,
    distill,
    gap_closed,
    predict_logits,
)


class ModuleTeacher:
    """A model trained in this job (an assistant) acting as the next step's teacher."""

    format = "torch"
    output_name = "logits"
    output_kind: OutputKind = "logits"
    fingerprint: str | None = None  # trained here: nothing to reuse across jobs

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.module = module.eval()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.parameters = count_parameters(module)

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return predict_logits(self.module, x, batch_size)


def _scaled(spec: StudentSpec, factor: float) -> StudentSpec:
    if spec.architecture == "cnn":
        return replace(spec, channels=tuple(max(1, round(c * factor)) for c in spec.channels))
    return replace(spec, hidden_sizes=tuple(max(1, round(h * factor)) for h in spec.hidden_sizes))


def assistant_specs(
    student: StudentSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    teacher_parameters: int,
    count: int,
) -> list[StudentSpec]:
    """`count` widenings of the student whose sizes lie geometrically between the student's
    and the teacher's parameter counts, largest first (the order they are trained in)."""

    def size(spec: StudentSpec) -> int:
        return count_parameters(build_student(spec, input_shape, num_classes))

    smallest = size(student)
    if teacher_parameters <= smallest:
        raise ValueError(
            f"the teacher ({teacher_parameters} parameters) is not larger than the student "
            f"({smallest}); there is no room for assistants"
        )
    specs = []
    for step in range(count, 0, -1):
        target = smallest * (teacher_parameters / smallest) ** (step / (count + 1))
        low, high = 1.0, 2.0
        while size(_scaled(student, high)) < target and high < 1e4:
            low, high = high, high * 2
        for _ in range(40):  # bisection on the width factor; sizes grow with it
            middle = math.sqrt(low * high)
            low, high = (middle, high) if size(_scaled(student, middle)) < target else (low, middle)
        specs.append(_scaled(student, high))
    return specs


def sized_student(
    student: StudentSpec, input_shape: tuple[int, ...], num_classes: int, max_parameters: int
) -> StudentSpec:
    """The student's layout scaled to the largest width with at most max_parameters."""

    def size(factor: float) -> int:
        return count_parameters(build_student(_scaled(student, factor), input_shape, num_classes))

    if size(1e-9) > max_parameters:  # every layer one unit wide is already too big
        raise ValueError(
            f"no {student.architecture} student of this shape fits in {max_parameters} "
            f"parameters (the narrowest has {size(1e-9)}); use fewer layers or a larger target"
        )
    low, high = 1e-6, 1.0
    while size(high) <= max_parameters and high < 1e5:
        low, high = high, high * 2
    for _ in range(50):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if size(middle) <= max_parameters else (low, middle)
    return _scaled(student, low)


@dataclass
class AssistantStep:
    spec: StudentSpec
    module: nn.Module
    metrics: dict[str, Any]


def distill_through_assistants(
    config: DistillConfig,
    teacher: Teacher,
    splits: Splits,
    assistants: list[StudentSpec],
    on_stage: Callable[[str], None] | None = None,
    on_assistant_epoch: Callable[[int, EpochRecord], None] | None = None,
    cache: LogitCache | None = None,
    **final: Any,
) -> tuple[DistillOutcome, list[AssistantStep]]:
    """teacher -> assistant_1 -> ... -> assistant_k -> student, each step a KD run."""
    stage = on_stage or (lambda _: None)
    current: Teacher = teacher
    steps: list[AssistantStep] = []
    teacher_test = teacher_logits(teacher, splits.test.x, cache)
    for number, spec in enumerate(assistants, start=1):
        stage(f"assistant_{number}")

        def report(record: EpochRecord, number: int = number) -> None:
            if on_assistant_epoch is not None:
                on_assistant_epoch(number, record)

        step_config = replace(config, student=spec, baseline=False)
        outcome = distill(
            step_config, current, splits, on_epoch=report, cache=cache if number == 1 else None
        )
        logits = predict_logits(outcome.student, splits.test.x)
        steps.append(
            AssistantStep(
                spec=spec,
                module=outcome.student,
                metrics={
                    "step": number,
                    "architecture": spec.architecture,
                    "hidden_sizes": list(spec.hidden_sizes),
                    "channels": list(spec.channels),
                    "parameters": outcome.metrics["student_parameters"],
                    "accuracy": outcome.metrics["student_accuracy"],
                    "agreement_with_teacher": agreement(logits, teacher_test),
                },
            )
        )
        current = ModuleTeacher(outcome.student, teacher.input_shape, teacher.num_classes)

    outcome = distill(config, current, splits, on_stage=on_stage, **final)
    # The last step's "teacher" was an assistant: report against the real teacher.
    student_test = predict_logits(outcome.student, splits.test.x)
    metrics = outcome.metrics
    metrics["teacher_accuracy"] = accuracy(teacher_test, splits.test.y)
    metrics["teacher_parameters"] = teacher.parameters
    metrics["agreement"] = agreement(student_test, teacher_test)
    metrics["gap_closed"] = gap_closed(
        metrics["student_accuracy"], metrics["scratch_accuracy"], metrics["teacher_accuracy"]
    )
    metrics["evaluation"]["teacher"] = classification_report(teacher_test, splits.test.y)
    metrics["assistants"] = [step.metrics for step in steps]
    return outcome, steps
