"""Search on validation, never on test: the candidates a search trains, in a fixed order.

Student candidates vary what KD's result depends on most: the temperature, the weight of the
hard labels (alpha), which synthesized transfer rows the student learns from, and, when the
job gave a parameter budget rather than a shape, the student's depth (each depth widened to
the budget). The scratch baseline gets the same budget: scratch candidates vary the learning
rate, weight decay and (with a budget) the depth. The first candidate of each is the job's
own settings, so a search is never worse on validation than no search."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import islice
from typing import Literal

from worker.engine.config import DistillConfig, StudentSpec
from worker.engine.sizing import sized_student

Kind = Literal["student", "scratch"]
TEMPERATURES = (2.0, 8.0)
ALPHAS = (0.5,)
LEARNING_RATE_FACTORS = (3.0, 1 / 3)
WEIGHT_DECAY = 1e-4
DEPTHS = (1, 2, 3)


@dataclass(frozen=True)
class Candidate:
    number: int  # 1, 2, ... within its kind, in training order
    kind: Kind
    config: DistillConfig
    # The synthesized or uploaded transfer sources this candidate learns from (by source).
    transfer: tuple[str, ...]


@dataclass(frozen=True)
class StudentShape:
    """What the student's shape may vary over: the job's layout and, when the job gave a
    parameter budget, the budget (each depth is widened to it)."""

    layout: StudentSpec
    input_shape: tuple[int, ...]
    num_classes: int
    max_parameters: int | None


def _depths(shape: StudentShape) -> list[StudentSpec]:
    """Other depths of the job's student, widened to its budget (none without a budget)."""
    if shape.max_parameters is None:
        return []
    layout, found = shape.layout, []
    for depth in DEPTHS:
        if layout.architecture == "cnn":
            width = layout.channels[0] if layout.channels else 16
            spec = replace(layout, channels=tuple(width * 2**i for i in range(depth)))
            current = len(layout.channels)
        else:
            width = layout.hidden_sizes[0] if layout.hidden_sizes else 128
            spec = replace(layout, hidden_sizes=(width,) * depth)
            current = len(layout.hidden_sizes)
        if depth == current:
            continue
        try:
            found.append(
                sized_student(spec, shape.input_shape, shape.num_classes, shape.max_parameters)
            )
        except ValueError:  # no student of this depth fits the budget
            continue
    return found


def _student_variants(
    base: DistillConfig, sources: tuple[str, ...], shape: StudentShape
) -> list[tuple[DistillConfig, tuple[str, ...]]]:
    method = base.method
    variants: list[tuple[DistillConfig, tuple[str, ...]]] = [(base, sources)]
    for temperature in TEMPERATURES:
        if temperature != method.temperature:
            variants.append(
                (replace(base, method=replace(method, temperature=temperature)), sources)
            )
    for alpha in ALPHAS:
        if alpha != method.alpha:
            variants.append((replace(base, method=replace(method, alpha=alpha)), sources))
    if len(sources) > 1:
        variants += [(base, (source,)) for source in sources]
    variants += [(replace(base, student=spec), sources) for spec in _depths(shape)]
    for temperature in TEMPERATURES:
        for alpha in ALPHAS:
            changed = replace(method, temperature=temperature, alpha=alpha)
            variants.append((replace(base, method=changed), sources))
    return variants


def _scratch_variants(base: DistillConfig, shape: StudentShape) -> list[DistillConfig]:
    hard_labels = replace(base.method, alpha=1.0, kd_stop_epoch=None, hint_output=None)
    scratch = replace(base, method=hard_labels)
    training = scratch.training
    variants = [scratch]
    for factor in LEARNING_RATE_FACTORS:
        rate = training.learning_rate * factor
        variants.append(replace(scratch, training=replace(training, learning_rate=rate)))
    variants.append(replace(scratch, training=replace(training, weight_decay=WEIGHT_DECAY)))
    variants += [replace(scratch, student=spec) for spec in _depths(shape)]
    for factor in LEARNING_RATE_FACTORS:
        changed = replace(
            training, learning_rate=training.learning_rate * factor, weight_decay=WEIGHT_DECAY
        )
        variants.append(replace(scratch, training=changed))
    return variants


def candidates(
    base: DistillConfig, sources: tuple[str, ...], shape: StudentShape, budget: int
) -> tuple[list[Candidate], list[Candidate]]:
    """Up to `budget` student candidates and, when the job trains a baseline, as many scratch
    candidates (which learn from the labeled rows only)."""
    single = replace(base, baseline=False)
    students = [
        Candidate(number, "student", config, transfer)
        for number, (config, transfer) in enumerate(
            islice(_unique(_student_variants(single, sources, shape)), budget), start=1
        )
    ]
    if not base.baseline:
        return students, []
    scratch = [
        Candidate(number, "scratch", config, ())
        for number, config in enumerate(
            islice(_unique_configs(_scratch_variants(single, shape)), budget), start=1
        )
    ]
    return students, scratch


def _unique(
    variants: list[tuple[DistillConfig, tuple[str, ...]]],
) -> list[tuple[DistillConfig, tuple[str, ...]]]:
    seen: list[tuple[DistillConfig, tuple[str, ...]]] = []
    for variant in variants:
        if variant not in seen:
            seen.append(variant)
    return seen


def _unique_configs(variants: list[DistillConfig]) -> list[DistillConfig]:
    seen: list[DistillConfig] = []
    for variant in variants:
        if variant not in seen:
            seen.append(variant)
    return seen
