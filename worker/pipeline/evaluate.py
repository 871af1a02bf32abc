"""Stage `evaluate`: the trained students and the teacher scored on the test split, in the
typed pieces of the job's metrics (app/jobs/metrics.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from app.jobs.metrics import (
    AssistantReport,
    CheckpointReport,
    ClassificationReport,
    CrossDomainReport,
    EnsembleMember,
    Evaluation,
    TeacherReport,
    TeacherRuntimeReport,
)
from worker.engine import (
    ClassReport,
    MappedTeacher,
    MethodResult,
    Teacher,
    accuracy,
    agreement,
    classification_report,
)
from worker.engine.logit_cache import teacher_logits
from worker.pipeline.context import JobRun
from worker.pipeline.plan import TrainingPlan
from worker.pipeline.teacher import JobTeachers


@dataclass(frozen=True)
class Scores:
    teacher_accuracy: float | None
    student_accuracy: float | None
    scratch_accuracy: float | None
    gap_closed: float | None
    agreement: float
    scratch_agreement: float | None
    evaluation: Evaluation
    teacher: TeacherReport
    cross_domain: CrossDomainReport | None
    assistants: list[AssistantReport] | None
    checkpoints: list[CheckpointReport] | None


def _report(found: ClassReport | None) -> ClassificationReport | None:
    return ClassificationReport.model_validate(asdict(found)) if found is not None else None


def _members(run: JobRun, plan: TrainingPlan, found: JobTeachers) -> list[EnsembleMember] | None:
    if run.spec.teachers.kind != "ensemble":
        return None
    splits = plan.splits
    members = []
    for member, file in zip(found.members, found.files, strict=True):
        test = teacher_logits(member, splits.test.x, run.cache)
        validation = teacher_logits(member, splits.validation.x, run.cache)
        members.append(
            EnsembleMember(
                id=file.id,
                output_name=file.output_name,
                output_kind=file.output_kind,
                parameters=member.parameters,
                accuracy=accuracy(test, splits.test.y),
                validation_accuracy=accuracy(validation, splits.validation.y),
            )
        )
    return members


def _teacher(run: JobRun, plan: TrainingPlan, found: JobTeachers, chosen: Teacher) -> TeacherReport:
    index = found.members.index(chosen) if run.spec.teachers.kind == "checkpoints" else 0
    file = found.files[index]
    return TeacherReport(
        id=file.id,
        output_name=file.output_name,
        output_kind=file.output_kind,
        input_shape=list(chosen.input_shape),
        num_classes=chosen.num_classes,
        ensemble=_members(run, plan, found),
        runtime=_runtime(found, index),
    )


def _runtime(found: JobTeachers, index: int) -> TeacherRuntimeReport | None:
    if index >= len(found.processes):
        return None
    process = found.processes[index]
    runtime = process.runtime
    return TeacherRuntimeReport(
        device=runtime.device,
        threads=runtime.threads,
        batch_rows=runtime.batch_rows,
        row_activation_bytes=runtime.row_activation_bytes,
        memory_bytes=runtime.memory_bytes,
        labelled_rows=process.labelled.rows,
        rows_per_second=process.labelled.rows_per_second,
    )


def _assistants(result: MethodResult) -> list[AssistantReport] | None:
    if not result.assistants:
        return None
    return [
        AssistantReport(
            step=step.number,
            architecture=step.spec.architecture,
            hidden_sizes=list(step.spec.hidden_sizes),
            channels=list(step.spec.channels),
            parameters=step.parameters,
            accuracy=step.accuracy,
            agreement_with_teacher=step.agreement_with_teacher,
        )
        for step in result.assistants
    ]


def _checkpoints(result: MethodResult) -> list[CheckpointReport] | None:
    if result.checkpoints is None:
        return None
    return [
        CheckpointReport(
            checkpoint=c.number, **{k: v for k, v in asdict(c).items() if k != "number"}
        )
        for c in result.checkpoints
    ]


def evaluate(run: JobRun, plan: TrainingPlan, found: JobTeachers, result: MethodResult) -> Scores:
    test = result.outcome.test
    chosen = result.teacher
    return Scores(
        teacher_accuracy=test.teacher_accuracy,
        student_accuracy=test.student_accuracy,
        scratch_accuracy=test.scratch_accuracy,
        gap_closed=test.gap_closed,
        agreement=agreement(test.student, test.teacher),
        scratch_agreement=agreement(test.scratch, test.teacher)
        if test.scratch is not None
        else None,
        evaluation=Evaluation(
            teacher=_report(classification_report(test.teacher, test.y)),
            student=_report(classification_report(test.student, test.y)),
            scratch=(
                _report(classification_report(test.scratch, test.y))
                if test.scratch is not None
                else None
            ),
        ),
        teacher=_teacher(run, plan, found, chosen),
        cross_domain=(
            CrossDomainReport.model_validate(chosen.describe())
            if isinstance(chosen, MappedTeacher)
            else None
        ),
        assistants=_assistants(result),
        checkpoints=_checkpoints(result),
    )
