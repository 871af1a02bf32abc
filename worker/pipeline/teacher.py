"""Stage `teacher`: the job's teachers, each in its own confined process, composed as the job
asks (one teacher, an ensemble, checkpoints of one teacher), and read through phi in a
cross-domain job (docs/methods.md §6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.datasets.parsers import load_arrays
from app.jobs.spec import (
    CrossDomainConfig,
    DilatedConvPhi,
    GaussianNoisePhi,
    IdentityPhi,
    OnnxPhi,
    VaePhi,
)
from worker.engine import (
    DilatedConvMapping,
    EnsembleTeacher,
    GaussianNoiseMapping,
    IdentityMapping,
    MappedTeacher,
    Mapping,
    MappingRejected,
    OnnxMapping,
    Splits,
    Teacher,
    VaeSpec,
    train_vae,
)
from worker.pipeline.context import JobRun
from worker.pipeline.errors import JobInputError
from worker.pipeline.inputs import JobFiles, JobInputs, TeacherFile
from worker.sandbox import SandboxedMapping, SandboxedTeacher, SandboxLimits


@dataclass(frozen=True)
class JobTeachers:
    # What the student learns from: the teacher, or an ensemble acting as one; through phi
    # in a cross-domain job.
    teacher: Teacher
    # Each member (of an ensemble, or each checkpoint) as the student sees it.
    members: list[Teacher]
    files: list[TeacherFile]
    mapping: Mapping | None = None
    # Each file's confined process (in files' order): how it runs and what it labelled.
    processes: tuple[SandboxedTeacher, ...] = ()


@dataclass(frozen=True)
class MappingInputs:
    shape: tuple[int, ...]  # the teacher's input, which phi must produce
    splits: Splits
    files: JobFiles
    limits: SandboxLimits


def _identity(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    return IdentityMapping(given.shape)


def _noise(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    assert isinstance(cross, GaussianNoisePhi)
    return GaussianNoiseMapping(given.shape, cross.sigma, cross.seed)


def _conv(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    assert isinstance(cross, DilatedConvPhi)
    return DilatedConvMapping(given.shape, cross.kernel_size, cross.dilation, cross.weights)


def _onnx(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    # Checked here with onnx; run only in a confined child, like a teacher (worker/sandbox.py).
    assert given.files.mapping is not None
    limits = given.limits
    return OnnxMapping(
        given.files.mapping,
        output_shape=given.shape,
        runner=lambda path: SandboxedMapping(path, limits),
    )


def _vae(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    assert isinstance(cross, VaePhi) and given.files.source is not None
    splits = given.splits
    source_x, source_y = load_arrays(given.files.source)
    if given.files.target is not None:
        target_x, target_y = load_arrays(given.files.target)
    else:
        target_x, target_y = splits.train.x, splits.train.y
    if source_y is None or target_y is None:
        raise JobInputError("the VAE pairs rows of both domains by class", "labels_required")
    spec = VaeSpec(
        latent_dim=cross.latent_dim,
        hidden=cross.hidden,
        epochs=cross.epochs,
        learning_rate=cross.learning_rate,
        beta=cross.beta,
        seed=cross.seed,
    )
    held_out = (
        (splits.validation.x, splits.validation.y) if splits.validation.y is not None else None
    )
    return train_vae(target_x, target_y, source_x, source_y, spec, held_out=held_out)


MAPPINGS: dict[type[object], Callable[[CrossDomainConfig, MappingInputs], Mapping]] = {
    IdentityPhi: _identity,
    GaussianNoisePhi: _noise,
    DilatedConvPhi: _conv,
    OnnxPhi: _onnx,
    VaePhi: _vae,
}


def build_mapping(cross: CrossDomainConfig, given: MappingInputs) -> Mapping:
    """phi for the job's cross_domain config; MappingRejected names what is wrong."""
    try:
        return MAPPINGS[type(cross)](cross, given)
    except MappingRejected as exc:
        raise MappingRejected(f"cross_domain: {exc}") from exc


def _through_phi(run: JobRun, found: JobTeachers, inputs: JobInputs) -> JobTeachers:
    cross = run.spec.cross_domain
    if cross is None:
        return found
    if isinstance(cross, VaePhi):
        run.stage("mapping")
    given = MappingInputs(
        tuple(found.teacher.input_shape),
        inputs.splits,
        inputs.files,
        SandboxLimits.from_settings(run.settings),
    )
    mapping = build_mapping(cross, given)
    return JobTeachers(
        teacher=MappedTeacher(found.teacher, mapping),
        members=[MappedTeacher(m, mapping) for m in found.members],
        files=found.files,
        mapping=mapping,
        processes=found.processes,
    )


def _started(run: JobRun, file: TeacherFile, limits: SandboxLimits) -> SandboxedTeacher:
    """The teacher's confined process; the job's events say how it runs."""
    process = SandboxedTeacher(file.path, limits)
    runtime = process.runtime
    run.event(
        "message",
        f"teacher {file.id} labels {runtime.sentence()}",
        {"teacher_id": file.id, "teacher_runtime": runtime.describe()},
    )
    return process


def teachers(run: JobRun, inputs: JobInputs) -> JobTeachers:
    limits = SandboxLimits.from_settings(run.settings)
    files = inputs.files.teachers
    processes = tuple(_started(run, f, limits) for f in files)
    members: list[Teacher] = list(processes)
    chosen = run.spec.teachers
    teacher = (
        EnsembleTeacher(members, run.spec.method.temperature)
        if chosen.kind == "ensemble"
        else members[0]
    )
    return _through_phi(run, JobTeachers(teacher, members, files, processes=processes), inputs)
