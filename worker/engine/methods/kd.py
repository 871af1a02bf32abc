"""Hinton's knowledge distillation (docs/methods.md §1): the student learns from the teacher's
softened outputs on the labeled rows and any transfer rows, and the same student is trained
from scratch on the labeled rows, with the same budget and seed, for comparison (§8)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from worker.engine.config import DistillConfig
from worker.engine.data import Splits
from worker.engine.evaluation import TestLogits, accuracy
from worker.engine.finite import finite_teacher_outputs
from worker.engine.hints import HintReport, hint_stage
from worker.engine.logit_cache import LogitCache, teacher_logits
from worker.engine.losses import UNLABELED
from worker.engine.methods.registry import MethodInputs, MethodResult, StageCallback, register
from worker.engine.outcome import DistillOutcome, TransferCounts
from worker.engine.students import (
    build_student,
    count_parameters,
    default_device,
    fit_standardization,
)
from worker.engine.teachers import Teacher
from worker.engine.training import (
    EpochRecord,
    TrainingRows,
    Validation,
    fit,
    predict_logits,
    split_standardize,
)


@dataclass(frozen=True)
class _Targets:
    """The teacher's outputs, computed once (and cached across jobs when a cache is given):
    nothing random reaches the teacher's input per epoch."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    transfer: list[np.ndarray]


def _targets(
    teacher: Teacher, splits: Splits, cache: LogitCache | None, score_test: bool
) -> _Targets:
    unscored = np.zeros((0, teacher.num_classes), np.float32)
    return _Targets(
        train=teacher_logits(teacher, splits.train.x, cache, "the training rows"),
        validation=teacher_logits(teacher, splits.validation.x, cache, "the validation rows"),
        test=(
            teacher_logits(teacher, splits.test.x, cache, "the test rows")
            if score_test
            else unscored
        ),
        transfer=[
            teacher_logits(teacher, part.x, cache, f"the transfer rows from {part.source}")
            for part in splits.transfer
        ],
    )


def _rows(
    config: DistillConfig, splits: Splits, targets: _Targets, device: torch.device
) -> TrainingRows:
    """Labeled rows then transfer rows, on the device; transfer rows carry UNLABELED."""
    labeled = len(splits.train.x)
    x = np.concatenate([splits.train.x, *(part.x for part in splits.transfer)])
    is_transfer = torch.zeros(len(x), dtype=torch.float32, device=device)
    is_transfer[labeled:] = 1.0
    labels = None
    method = config.method
    if splits.train.y is not None and (method.alpha > 0 or method.kd_stop_epoch is not None):
        labels = torch.full((len(x),), UNLABELED, dtype=torch.long, device=device)
        labels[:labeled] = torch.as_tensor(splits.train.y, dtype=torch.long, device=device)
    return TrainingRows(
        x=torch.as_tensor(x, dtype=torch.float32, device=device),
        targets=torch.as_tensor(
            np.concatenate([targets.train, *targets.transfer]), dtype=torch.float32, device=device
        ),
        labels=labels,
        is_transfer=is_transfer,
        labeled_rows=labeled,
    )


def _new_student(
    config: DistillConfig,
    teacher: Teacher,
    standardization: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
) -> nn.Module:
    torch.manual_seed(config.training.seed)
    student = build_student(
        config.student, teacher.input_shape, teacher.num_classes, standardization
    )
    return student.to(device)


def _hints(
    config: DistillConfig,
    teacher: Teacher,
    splits: Splits,
    student: nn.Module,
    rows: TrainingRows,
    stage: StageCallback,
) -> HintReport | None:
    """FitNets stage 1 (docs/methods.md §5), on the labeled rows' raw inputs."""
    name = config.method.hint_output
    if name is None:
        return None
    hint_of = getattr(teacher, "hint", None)
    if hint_of is None:
        raise ValueError("hints need a teacher that exposes intermediate tensors (ONNX)")
    stage("hints")
    hp = config.training
    targets = finite_teacher_outputs(
        np.asarray(hint_of(splits.train.x, name)), f"the hint tensor {name!r}"
    )
    report = hint_stage(
        student,
        rows.x[: rows.labeled_rows],
        targets,
        name,
        config.method.hint_epochs,
        hp.batch_size,
        hp.learning_rate,
        hp.seed,
    )
    stage("training")
    return report


def _standardized(student: nn.Module, rows: TrainingRows, config: DistillConfig) -> TrainingRows:
    """Rows through the student's Standardize layer once, up front (after the hint stage,
    which reads raw rows); the raw copy is dropped. Jitter shifts raw images (zero fill), so
    it keeps the per-batch layer."""
    if not config.student.normalize or config.training.jitter_pixels:
        return rows
    with torch.no_grad():
        x = split_standardize(student)[0](rows.x)
    return replace(rows, x=x, standardized=True)


def _test_logits(model: nn.Module, inputs: MethodInputs) -> np.ndarray:
    """The model on the test rows; none for a search's candidates, which are never scored on
    the test rows (only the chosen one is, once)."""
    if not inputs.score_test:
        return np.zeros((0, inputs.teacher.num_classes), np.float32)
    return predict_logits(model, inputs.splits.test.x)


@dataclass(frozen=True)
class _Scratch:
    history: list[EpochRecord]
    test: np.ndarray | None
    note: str
    module: nn.Module | None = None


def _scratch(
    inputs: MethodInputs,
    rows: TrainingRows,
    validation: Validation,
    standardization: tuple[np.ndarray, np.ndarray] | None,
) -> _Scratch:
    """The same student, rows, budget and seed; hard labels only, so no transfer rows, and
    nothing from the teacher (a text student's embeddings start random)."""
    config, splits = inputs.config, inputs.splits
    if not config.baseline:
        return _Scratch([], None, "off")
    if splits.train.y is None:
        return _Scratch(
            [], None, "skipped: the training data has no labels to learn from without a teacher"
        )
    inputs.callbacks.stage("baseline")
    labels = torch.as_tensor(splits.train.y, dtype=torch.long, device=rows.x.device)
    teacher = inputs.teacher
    alone = replace(config, student=replace(config.student, embeddings=None))
    scratch = _new_student(alone, teacher, standardization, rows.x.device)
    history = fit(
        scratch, rows.labeled(labels), config, 1.0, validation, inputs.callbacks.on_baseline_epoch
    )
    test = _test_logits(scratch, inputs)
    return _Scratch(history, test, "trained", scratch.cpu().eval())


def distill(inputs: MethodInputs, device: str | None = None) -> DistillOutcome:
    """Train a student on the teacher's softened outputs, and (config.baseline) the same
    student from scratch; score both on the test split. A callback may raise to abort."""
    config, splits, teacher, stage = (
        inputs.config,
        inputs.splits,
        inputs.teacher,
        inputs.callbacks.stage,
    )
    run_on = torch.device(device) if device else default_device()
    stage("teacher_outputs")
    targets = _targets(teacher, splits, inputs.cache, inputs.score_test)
    validation = Validation(splits.validation.x, splits.validation.y, targets.validation)
    stage("training")
    rows = _rows(config, splits, targets, run_on)
    standardization = (
        fit_standardization(splits.train.x, per_channel=config.student.architecture == "cnn")
        if config.student.normalize
        else None
    )
    student = _new_student(config, teacher, standardization, run_on)
    hint = _hints(config, teacher, splits, student, rows, stage)
    rows = _standardized(student, rows, config)
    started = time.perf_counter()
    history = fit(
        student,
        rows,
        config,
        config.method.alpha,
        validation,
        inputs.callbacks.on_epoch,
        lambda batch: finite_teacher_outputs(teacher.logits(batch), "a jittered training batch"),
    )
    train_seconds = time.perf_counter() - started
    scratch = _scratch(inputs, rows, validation, standardization)
    stage("evaluating")
    student_test = _test_logits(student, inputs)
    return DistillOutcome(
        student=student.cpu().eval(),
        history=history,
        test=TestLogits(splits.test.y, targets.test, student_test, scratch.test),
        teacher_parameters=teacher.parameters,
        student_parameters=count_parameters(student),
        train_seconds=train_seconds,
        device=str(run_on),
        transfer=TransferCounts(
            labeled_rows=rows.labeled_rows,
            transfer_rows=len(rows.x) - rows.labeled_rows,
            sources={part.source: len(part.x) for part in splits.transfer},
        ),
        baseline=scratch.note,
        hint=hint,
        scratch_history=scratch.history,
        scratch_student=scratch.module,
        teacher_validation_accuracy=accuracy(targets.validation, splits.validation.y),
    )


@register("kd")
def plain_kd(inputs: MethodInputs) -> MethodResult:
    return MethodResult(outcome=distill(inputs), teacher=inputs.teacher)


__all__ = ["distill", "plain_kd"]
