"""Stage `plan`: from the job's spec and teachers to what will be trained: the method, the
engine's config, the student (sized when the job gave a budget), the assistants, and the
transfer rows beside the labeled ones."""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.datasets.parsers import load_arrays
from app.jobs.metrics import EmbeddingsReport, SizedStudent
from app.jobs.spec import (
    AUTO_WIDTHS,
    DEFAULT_COMPRESSION,
    AssistantsConfig,
    JobSpec,
    KDMethodConfig,
    StudentConfig,
    TrainingConfig,
    TransferConfig,
)
from worker.engine import (
    DistillConfig,
    KDMethod,
    Mapping,
    Splits,
    StudentSpec,
    SynthesisSpec,
    Teacher,
    TrainingSpec,
    TransferRows,
    VaeMapping,
    assistant_specs,
    build_student,
    count_parameters,
    sized_student,
    synthesize,
)
from worker.engine.methods.registry import SearchSettings
from worker.engine.search import StudentShape
from worker.engine.text.synthesis import TEXT_METHODS, synthesize_text
from worker.pipeline.context import JobRun
from worker.pipeline.defaults import ChosenTransfer, choose_transfer
from worker.pipeline.errors import JobInputError
from worker.pipeline.inputs import JobInputs
from worker.pipeline.teacher import JobTeachers
from worker.pipeline.text import TextSetup, text_loader, text_student, with_embeddings


def engine_student(student: StudentConfig) -> StudentSpec:
    return StudentSpec(
        architecture=student.architecture,
        hidden_sizes=student.layout,
        dropout=student.dropout,
        batch_norm=student.batch_norm,
        channels=tuple(student.channels),
        normalize=student.normalize,
    )


def engine_method(method: KDMethodConfig) -> KDMethod:
    return KDMethod(
        temperature=method.temperature,
        alpha=method.alpha,
        kd_stop_epoch=method.kd_stop_epoch,
        hint_output=method.hint.teacher_output if method.hint else None,
        hint_epochs=method.hint.epochs if method.hint else 0,
        loss=method.loss,
    )


def engine_training(training: TrainingConfig) -> TrainingSpec:
    return TrainingSpec(
        epochs=training.epochs,
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        seed=training.seed,
        jitter_pixels=training.jitter_pixels,
    )


def engine_config(spec: JobSpec, student: StudentSpec) -> DistillConfig:
    return DistillConfig(
        student=student,
        method=engine_method(spec.method),
        training=engine_training(spec.training),
        baseline=spec.baseline,
    )


def synthesis_specs(transfer: TransferConfig) -> list[SynthesisSpec]:
    return [
        SynthesisSpec(
            method=method,
            size=transfer.size,
            seed=transfer.seed,
            mixup_alpha=transfer.mixup_alpha,
            noise_sigma=transfer.noise_sigma,
            shift_pixels=transfer.shift_pixels,
        )
        for method in transfer.methods
    ]


@dataclass(frozen=True)
class TrainingPlan:
    method: str  # a name in worker.engine.METHODS
    config: DistillConfig
    splits: Splits  # with the transfer rows
    transfer: ChosenTransfer
    search: SearchSettings | None = None
    student_note: str | None = None  # text jobs: how the default student was chosen
    text: TextSetup | None = None  # text jobs: the tokenizer and the rows' length
    sized: SizedStudent | None = None
    assistants: tuple[StudentSpec, ...] = ()
    embeddings: EmbeddingsReport | None = None  # text jobs: where the student's started


def _auto_widths(student: StudentSpec) -> StudentSpec:
    low, high = AUTO_WIDTHS
    return replace(
        student, hidden_sizes=tuple(min(high, max(low, h)) for h in student.hidden_sizes)
    )


def student_plan(spec: JobSpec, teacher: Teacher) -> tuple[StudentSpec, SizedStudent | None]:
    """The student to train: as given, sized to the job's parameter budget, or (the default)
    sized from the teacher."""
    wanted = spec.student
    layout = engine_student(wanted)
    budget = wanted.budget(teacher.parameters)
    if budget is None:
        return layout, None
    auto = wanted.sized_from_teacher
    try:
        chosen = sized_student(layout, teacher.input_shape, teacher.num_classes, budget)
    except ValueError as exc:
        if not auto:
            raise JobInputError(str(exc), "student_too_small") from exc
        chosen = replace(layout, hidden_sizes=(AUTO_WIDTHS[0],) * len(layout.hidden_sizes))
    if auto:
        chosen = _auto_widths(chosen)
    parameters = count_parameters(build_student(chosen, teacher.input_shape, teacher.num_classes))
    reason = None
    if auto:
        reason = (
            f"sized from the teacher ({teacher.parameters:,} parameters): {parameters:,} "
            f"parameters, {teacher.parameters / parameters:.1f}x fewer"
        )
        if parameters > budget:
            reason += (
                f"; the narrowest default student ({AUTO_WIDTHS[0]} units a layer) has more "
                f"than 1/{DEFAULT_COMPRESSION} of the teacher's"
            )
    return chosen, SizedStudent(
        max_parameters=budget,
        compression=float(DEFAULT_COMPRESSION) if auto else wanted.compression,
        hidden_sizes=list(chosen.hidden_sizes),
        channels=list(chosen.channels),
        reason=reason,
    )


def assistant_plan(
    assistants: AssistantsConfig, student: StudentSpec, teacher: Teacher
) -> tuple[StudentSpec, ...]:
    if assistants.hidden_sizes is not None:
        return tuple(replace(student, hidden_sizes=tuple(h)) for h in assistants.hidden_sizes)
    if assistants.channels is not None:
        return tuple(replace(student, channels=tuple(c)) for c in assistants.channels)
    assert assistants.count is not None
    try:
        found = assistant_specs(
            student, teacher.input_shape, teacher.num_classes, teacher.parameters, assistants.count
        )
    except ValueError as exc:
        raise JobInputError(str(exc), "assistants_invalid") from exc
    return tuple(found)


def transfer_rows(
    run: JobRun, inputs: JobInputs, mapping: Mapping | None, chosen: ChosenTransfer
) -> tuple[TransferRows, ...]:
    """Rows from transfer datasets, then rows synthesized from the training split only
    ('vae' rows are decoded by the job's cross-domain VAE mapping)."""
    if not inputs.files.transfer and chosen.config is None:
        return ()
    run.stage("transfer_set")
    load = text_loader(inputs.text) if inputs.text is not None else load_arrays
    parts = [TransferRows(source=i, x=load(path)[0]) for i, path in inputs.files.transfer]
    generator = mapping if isinstance(mapping, VaeMapping) else None
    train = inputs.splits.train.x
    for synthesis in synthesis_specs(chosen.config) if chosen.config is not None else []:
        if synthesis.method == "vae" and generator is None:
            raise JobInputError("'vae' synthesis needs cross_domain.phi = 'vae'", "vae_required")
        if synthesis.method in TEXT_METHODS:
            if inputs.text is None:
                raise JobInputError(f"{synthesis.method!r} synthesis makes text", "text_required")
            special = inputs.text.encoder.special
            rows = synthesize_text(train, synthesis.method, synthesis.size, synthesis.seed, special)
        else:
            rows = synthesize(train, synthesis, generator)
        parts.append(TransferRows(source=synthesis.method, x=rows))
    return tuple(parts)


def method_name(spec: JobSpec) -> str:
    if spec.teachers.kind == "checkpoints":
        return "early_stopped_teacher"
    if spec.assistants is not None:
        return "assistants"
    return "search" if spec.search_budget is not None else "kd"


def search_plan(
    spec: JobSpec, teacher: Teacher, sized: SizedStudent | None
) -> SearchSettings | None:
    if spec.search_budget is None:
        return None
    shape = StudentShape(
        layout=engine_student(spec.student),
        input_shape=teacher.input_shape,
        num_classes=teacher.num_classes,
        max_parameters=sized.max_parameters if sized is not None else None,
    )
    return SearchSettings(budget=spec.search_budget, shape=shape)


def plan(run: JobRun, inputs: JobInputs, found: JobTeachers) -> TrainingPlan:
    spec, teacher = run.spec, found.teacher
    max_rows = run.settings.auto_transfer_max_rows
    chosen = choose_transfer(spec, inputs.splits.train.x, max_rows, text=inputs.text is not None)
    splits = replace(inputs.splits, transfer=transfer_rows(run, inputs, found.mapping, chosen))
    note, embeddings = None, None
    if inputs.text is not None:
        student, note = text_student(spec, splits, inputs.text, teacher)
        student, embeddings = with_embeddings(spec, student, inputs.text)
        sized: SizedStudent | None = None
    else:
        student, sized = student_plan(spec, teacher)
    return TrainingPlan(
        method=method_name(spec),
        config=engine_config(spec, student),
        splits=splits,
        transfer=chosen,
        search=search_plan(spec, teacher, sized),
        student_note=note,
        text=inputs.text,
        sized=sized,
        assistants=assistant_plan(spec.assistants, student, teacher) if spec.assistants else (),
        embeddings=embeddings,
    )
