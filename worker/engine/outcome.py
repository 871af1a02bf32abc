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
    # The scratch baseline itself (exported beside the student), when it was trained.
    scratch_student: nn.Module | None = None
    # The teacher (as the job sees it: through phi, or the ensemble) on the validation rows.
    teacher_validation_accuracy: float | None = None

    @property
    def validation_accuracy(self) -> float | None:
        """The trained student's, after its last epoch."""
        return self.history[-1].validation_accuracy if self.history else None

    @property
    def scratch_validation_accuracy(self) -> float | None:
        return self.scratch_history[-1].validation_accuracy if self.scratch_history else None


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
