"""Training methods register here by name, behind one signature and one result type, as
torchdistill's registries do: `METHODS[name](inputs) -> MethodResult`. A new method is a
module with one `@register("name")` function; the job pipeline needs no change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from worker.engine.config import DistillConfig, StudentSpec
from worker.engine.data import Splits
from worker.engine.logit_cache import LogitCache
from worker.engine.outcome import AssistantStep, CheckpointScore, DistillOutcome
from worker.engine.search import StudentShape
from worker.engine.teachers import Teacher
from worker.engine.training import EpochCallback

StageCallback = Callable[[str], None]


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True)
class TrainingCallbacks:
    """Where a run reports: each stage it enters and each epoch of the student and of the
    scratch baseline. A callback may raise to stop the run (the caller's cancellation)."""

    stage: StageCallback = _ignore
    on_epoch: EpochCallback | None = None
    on_baseline_epoch: EpochCallback | None = None


@dataclass(frozen=True)
class MethodInputs:
    config: DistillConfig
    # The job's teacher (an ensemble or a mapped teacher acts as one), or, for the
    # early-stopped-teacher method, the checkpoints of one teacher in order.
    teachers: tuple[Teacher, ...]
    splits: Splits
    callbacks: TrainingCallbacks = TrainingCallbacks()
    cache: LogitCache | None = None
    # Teacher assistants, largest first (the assistants method).
    assistants: tuple[StudentSpec, ...] = ()
    # The search method: how many candidates, and what the student's shape may vary over.
    search: SearchSettings | None = None
    # False for a search's candidates: the test rows are scored once, for the chosen model.
    score_test: bool = True

    @property
    def teacher(self) -> Teacher:
        return self.teachers[0]


@dataclass(frozen=True)
class SearchSettings:
    budget: int
    shape: StudentShape


@dataclass(frozen=True)
class CandidateScore:
    """One trained candidate of a search, scored on the validation rows."""

    number: int
    kind: Literal["student", "scratch"]
    config: DistillConfig
    transfer: tuple[str, ...]
    validation_accuracy: float | None
    agreement: float | None  # with the teacher, on the validation rows
    parameters: int
    seconds: float
    error: str | None = None
    chosen: bool = False


@dataclass
class MethodResult:
    outcome: DistillOutcome
    # The teacher the student is compared with: the job's, or the checkpoint chosen.
    teacher: Teacher
    assistants: list[AssistantStep] = field(default_factory=list)
    checkpoints: list[CheckpointScore] | None = None
    search: list[CandidateScore] | None = None


Method = Callable[[MethodInputs], MethodResult]
METHODS: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
    def add(method: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is registered already")
        METHODS[name] = method
        return method

    return add
