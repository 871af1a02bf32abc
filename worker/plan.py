"""From a job's stored spec to the engine's inputs: splits, transfer rows, configs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.datafiles import load_arrays
from app.settings import get_settings
from worker.engine import (
    ArraySplit,
    DilatedConvMapping,
    DistillConfig,
    GaussianNoiseMapping,
    IdentityMapping,
    KDMethod,
    MappedTeacher,
    Mapping,
    MappingRejected,
    OnnxMapping,
    Splits,
    StudentSpec,
    SynthesisSpec,
    Teacher,
    TrainingSpec,
    TransferRows,
    VaeMapping,
    VaeSpec,
    assistant_specs,
    random_split,
    sized_student,
    stratified_split,
    synthesize,
    train_vae,
)
from worker.engine.evaluation import onnx_latency_ms, teacher_latency_ms
from worker.sandbox import SandboxedMapping, SandboxLimits

HELD_OUT_FRACTION = 0.15


class JobInputError(Exception):
    """A problem with the job's inputs found only when it ran; the message is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def build_splits(
    train_path: Path, validation_path: Path | None, test_path: Path | None, seed: int
) -> tuple[Splits, dict[str, Any]]:
    """Use the given held-out datasets; carve what is missing out of train, stratified."""
    x, y = load_arrays(train_path)
    given_val = ArraySplit(*load_arrays(validation_path)) if validation_path else None
    given_test = ArraySplit(*load_arrays(test_path)) if test_path else None
    held_out = HELD_OUT_FRACTION * ((given_val is None) + (given_test is None))
    report: dict[str, Any] = {"seed": seed}
    if held_out == 0:
        assert given_val is not None and given_test is not None
        parts = [np.arange(len(x)), np.array([], dtype=np.int64), np.array([], dtype=np.int64)]
    else:
        val_fraction = HELD_OUT_FRACTION if given_val is None else 0.0
        test_fraction = HELD_OUT_FRACTION if given_test is None else 0.0
        fractions = (1.0 - held_out, val_fraction, test_fraction)
        if y is not None:
            parts = list(stratified_split(y, fractions, seed))
            report["method"] = "stratified by class"
        else:
            parts = list(random_split(len(x), fractions, seed))
            report["method"] = "random (unlabeled data)"
        report["fractions"] = {
            "train": fractions[0],
            "validation": val_fraction,
            "test": test_fraction,
        }

    def part(i: int) -> ArraySplit:
        return ArraySplit(x[parts[i]], y[parts[i]] if y is not None else None)

    splits = Splits(
        train=part(0),
        validation=given_val or part(1),
        test=given_test or part(2),
    )
    report.update(
        {
            "train": {"rows": len(splits.train.x), "source": "train_dataset_id"},
            "validation": {
                "rows": len(splits.validation.x),
                "source": "validation_dataset_id" if given_val else "held out of train",
            },
            "test": {
                "rows": len(splits.test.x),
                "source": "test_dataset_id" if given_test else "held out of train",
            },
        }
    )
    return splits, report


def transfer_rows(
    datasets: list[tuple[str, Path]],
    transfer: dict[str, Any] | None,
    splits: Splits,
    mapping: Mapping | None = None,
) -> tuple[TransferRows, ...]:
    """Rows from transfer datasets, then rows synthesized from the training split only
    ('vae' rows are decoded by the job's cross-domain VAE mapping)."""
    parts = [
        TransferRows(source=dataset_id, x=load_arrays(path)[0]) for dataset_id, path in datasets
    ]
    if transfer:
        methods = transfer["synthesize"]
        for method in dict.fromkeys([methods] if isinstance(methods, str) else methods):
            spec = SynthesisSpec(
                method=method,
                size=int(transfer["size"]),
                seed=int(transfer["seed"]),
                mixup_alpha=float(transfer["mixup_alpha"]),
                noise_sigma=float(transfer["noise_sigma"]),
                shift_pixels=int(transfer["shift_pixels"]),
            )
            generator = mapping if isinstance(mapping, VaeMapping) else None
            if method == "vae" and generator is None:
                raise JobInputError(
                    "vae_required", "'vae' synthesis needs cross_domain.phi = 'vae'"
                )
            rows = synthesize(splits.train.x, spec, generator)
            parts.append(TransferRows(source=method, x=rows))
    return tuple(parts)


def measure_latency(student_onnx: Path, teacher: Teacher) -> dict[str, Any]:
    """Median latency on this worker of the ONNX student and the teacher in its own runtime."""
    shape = teacher.input_shape
    result: dict[str, Any] = {"teacher_runtime": teacher.format, "repeats": 30}
    for batch in (1, 64):
        student_ms = onnx_latency_ms(student_onnx, shape, batch)
        # A sandboxed teacher times itself inside its process, so pipes are not in the figure.
        timed_inside = getattr(teacher, "latency_ms", None)
        teacher_ms = (
            float(timed_inside(batch, 30))
            if callable(timed_inside)
            else teacher_latency_ms(teacher.logits, shape, batch)
        )
        result[f"batch_{batch}"] = {
            "student_onnx": student_ms,
            "teacher": teacher_ms,
            "speedup": teacher_ms / student_ms if student_ms > 0 else None,
        }
    return result


def assistant_plan(
    assistants: dict[str, Any], config: DistillConfig, teacher: Teacher
) -> list[StudentSpec]:
    student = config.student
    if assistants.get("hidden_sizes"):
        return [replace(student, hidden_sizes=tuple(h)) for h in assistants["hidden_sizes"]]
    if assistants.get("channels"):
        return [replace(student, channels=tuple(c)) for c in assistants["channels"]]
    try:
        return assistant_specs(
            student,
            teacher.input_shape,
            teacher.num_classes,
            teacher.parameters,
            int(assistants["count"]),
        )
    except ValueError as exc:
        raise JobInputError("assistants_invalid", str(exc)) from exc


def student_plan(
    spec: dict[str, Any], teacher: Teacher
) -> tuple[StudentSpec, dict[str, Any] | None]:
    """The student to train, sized automatically when the job asks for a parameter budget."""
    student = spec["student"]
    layout = StudentSpec(
        architecture=student["architecture"],
        hidden_sizes=tuple(student["hidden_sizes"]),
        dropout=float(student["dropout"]),
        batch_norm=bool(student["batch_norm"]),
        channels=tuple(student["channels"]),
        normalize=bool(student.get("normalize", True)),
    )
    budget = student.get("max_parameters")
    if student.get("compression"):
        budget = int(teacher.parameters / float(student["compression"]))
    if budget is None:
        return layout, None
    try:
        chosen = sized_student(layout, teacher.input_shape, teacher.num_classes, int(budget))
    except ValueError as exc:
        raise JobInputError("student_too_small", str(exc)) from exc
    sizing = {
        "max_parameters": int(budget),
        "compression": student.get("compression"),
        "hidden_sizes": list(chosen.hidden_sizes),
        "channels": list(chosen.channels),
    }
    return chosen, sizing


def distill_config(spec: dict[str, Any], student: StudentSpec) -> DistillConfig:
    method, training = spec["method"], spec["training"]
    return DistillConfig(
        student=student,
        method=KDMethod(
            temperature=float(method["temperature"]),
            alpha=float(method["alpha"]),
            kd_stop_epoch=method.get("kd_stop_epoch"),
            hint_output=(method.get("hint") or {}).get("teacher_output"),
            hint_epochs=int((method.get("hint") or {}).get("epochs", 5)),
        ),
        training=TrainingSpec(
            epochs=int(training["epochs"]),
            batch_size=int(training["batch_size"]),
            learning_rate=float(training["learning_rate"]),
            weight_decay=float(training["weight_decay"]),
            seed=int(training["seed"]),
            jitter_pixels=int(training.get("jitter_pixels", 0)),
        ),
        baseline=bool(spec.get("baseline", True)),
    )


def cross_domain_teachers(
    spec: dict[str, Any],
    teacher: Teacher,
    members: list[Teacher],
    splits: Splits,
    paths: dict[str, Path],
    on_stage: Callable[[str], None] | None = None,
) -> tuple[Teacher, list[Teacher], Mapping | None]:
    """Cross-domain jobs (METHODS.md §6): the teacher and each member read the job's
    target-domain inputs through phi. Without `cross_domain` in the spec, nothing changes."""
    cross = spec.get("cross_domain")
    if not cross:
        return teacher, members, None
    try:
        mapping = build_mapping(cross, teacher, splits, paths, on_stage)
        return (
            MappedTeacher(teacher, mapping),
            [MappedTeacher(m, mapping) for m in members],
            mapping,
        )
    except MappingRejected as exc:
        raise JobInputError("mapping_invalid", f"cross_domain: {exc}") from exc


def build_mapping(
    cross: dict[str, Any],
    teacher: Teacher,
    splits: Splits,
    paths: dict[str, Path],
    on_stage: Callable[[str], None] | None = None,
) -> Mapping:
    phi, shape = cross["phi"], tuple(teacher.input_shape)
    if phi == "identity":
        return IdentityMapping(shape)
    if phi == "gaussian_noise":
        return GaussianNoiseMapping(shape, float(cross["sigma"]), int(cross["seed"]))
    if phi == "dilated_conv":
        return DilatedConvMapping(
            shape, int(cross["kernel_size"]), int(cross["dilation"]), cross.get("weights")
        )
    if phi == "onnx":
        # Checked here with onnx; run only in a confined child, like a teacher (worker/sandbox.py).
        limits = SandboxLimits.from_settings(get_settings())
        return OnnxMapping(
            paths["mapping"], output_shape=shape, runner=lambda p: SandboxedMapping(p, limits)
        )
    if phi != "vae":
        raise JobInputError("mapping_invalid", f"unknown cross_domain.phi {phi!r}")
    if on_stage is not None:
        on_stage("mapping")
    source_x, source_y = load_arrays(paths["source"])
    if "target" in paths:
        target_x, target_y = load_arrays(paths["target"])
    else:
        target_x, target_y = splits.train.x, splits.train.y
    if source_y is None or target_y is None:
        raise JobInputError("labels_required", "the VAE pairs rows of both domains by class")
    vae = VaeSpec(
        latent_dim=int(cross["latent_dim"]),
        hidden=int(cross["hidden"]),
        epochs=int(cross["epochs"]),
        learning_rate=float(cross["learning_rate"]),
        beta=float(cross["beta"]),
        seed=int(cross["seed"]),
    )
    held_out = (
        (splits.validation.x, splits.validation.y) if splits.validation.y is not None else None
    )
    return train_vae(target_x, target_y, source_x, source_y, vae, held_out=held_out)


def cross_domain_report(teacher: Teacher) -> dict[str, Any] | None:
    """What metrics.json says about phi: which one, its parameters, the VAE's losses."""
    return teacher.describe() if isinstance(teacher, MappedTeacher) else None
