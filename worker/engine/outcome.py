"""What a distillation run hands back: the student, its curves, and the raw material of its
report (test-split logits of teacher, student and scratch; counts; the steps of a method)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from worker.engine.config import StudentSpec
from worker.engine.evaluation import TestLogits
from worker.engine.hints import HintReport
from worker.engine.training import EpochRecord


@dataclass(frozen=True)
class TransferCounts:
    labeled_rows: int
    transfer_rows: int
    sources: dict[str, int]


@dataclass
class DistillOutcome:
    """One KD run."""

    student: nn.Module
    history: list[EpochRecord]
    test: TestLogits
    teacher_parameters: int
    student_parameters: int
    train_seconds: float
    device: str
    transfer: TransferCounts
    baseline: str  # "trained", "off", or "skipped: <why>"
    hint: HintReport | None = None
    scratch_history: list[EpochRecord] = field(default_factory=list)


@dataclass(frozen=True)
class AssistantStep:
    """One teacher assistant (docs/methods.md §3), trained in the chain before the student."""

    number: int
    spec: StudentSpec
    module: nn.Module
    parameters: int
    accuracy: float | None
    agreement_with_teacher: float


@dataclass(frozen=True)
class CheckpointScore:
    """One teacher checkpoint (docs/methods.md §4) and the student distilled from it."""

    number: int
    teacher_accuracy: float | None
    teacher_parameters: int
    validation_accuracy: float
    student_accuracy: float | None
    chosen: bool
