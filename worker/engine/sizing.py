"""Sizing students: scale a layout's widths to a parameter budget, or to sizes between the
student's and the teacher's (the teacher assistants of docs/methods.md §3)."""

from __future__ import annotations

import math
from dataclasses import replace

from worker.engine.config import StudentSpec
from worker.engine.students import build_student, count_parameters


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
