"""The distillation loop: teacher outputs once, data on the device, a plain training loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.config import DistillConfig
from worker.engine.data import Splits
from worker.engine.evaluation import classification_report
from worker.engine.finite import finite_loss, finite_teacher_outputs
from worker.engine.hints import hint_stage
from worker.engine.hooks import current_hooks, pack_state, unpack_state
from worker.engine.logit_cache import LogitCache, teacher_logits
from worker.engine.losses import UNLABELED, kd_loss_rows
from worker.engine.students import (
    Standardize,
    build_student,
    count_parameters,
    default_device,
    fit_standardization,
)
from worker.engine.teachers import Teacher


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    hard_loss: float
    soft_loss: float
    validation_accuracy: float | None
    seconds: float
    # The soft term split by where rows came from: how well the student follows the teacher
    # on the labeled rows and on the transfer rows (None without transfer rows).
    soft_loss_labeled: float | None = None
    soft_loss_transfer: float | None = None


@dataclass
class DistillOutcome:
    student: nn.Module
    history: list[EpochRecord]
    metrics: dict[str, Any]
    scratch_history: list[EpochRecord] = field(default_factory=list)


def accuracy(logits: np.ndarray, y: np.ndarray | None) -> float | None:
    if y is None or len(y) == 0:
        return None
    return float((logits.argmax(axis=1) == y).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean()) if len(a) else 0.0


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    data = torch.as_tensor(x, dtype=torch.float32)
    outs = [
        model(data[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(data), batch_size)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class _TrainingRows:
    """What one training run sees, already on the device."""

    x: torch.Tensor
    targets: torch.Tensor  # teacher logits, one row per input
    labels: torch.Tensor | None  # UNLABELED for transfer rows; None: no hard term
    is_transfer: torch.Tensor  # 1.0 on transfer rows, for reporting the soft term by source
    labeled_rows: int
    # x went through the student's Standardize layer once, up front: the training steps run
    # the layers after it, with no per-batch normalization a plain loop would not have.
    standardized: bool = False


def jitter(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random offset of up to `pixels` in each spatial direction,
    filling with zeros (Hinton et al. trained their MNIST teacher with 2-pixel jitter).
    Images are [batch, height, width] or [batch, channels, height, width]."""
    flat = x.dim() == 3
    images = x.unsqueeze(1) if flat else x
    n, _, height, width = images.shape
    offsets = torch.randint(-pixels, pixels + 1, (2, n), generator=generator).to(x.device)
    padded = nn.functional.pad(images, (pixels, pixels, pixels, pixels))
    rows = torch.arange(height, device=x.device)[None, :] + offsets[0][:, None] + pixels
    cols = torch.arange(width, device=x.device)[None, :] + offsets[1][:, None] + pixels
    batch = torch.arange(n, device=x.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    shifted = shifted.permute(0, 3, 1, 2)
    return shifted.squeeze(1) if flat else shifted


def _fit(
    student: nn.Module,
    rows: _TrainingRows,
    config: DistillConfig,
    alpha: float,
    validation: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    on_epoch: Callable[[EpochRecord], None] | None,
    teacher_on_batch: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[EpochRecord]:
    """Train for the configured epochs. With jitter, every batch is shifted afresh and (when
    `teacher_on_batch` is given) the teacher labels the shifted batch: no cache can serve it.

    Under run hooks: a per-step check that may stop the run, and a checkpoint after every
    epoch from which a later attempt resumes (weights, optimizer, RNG states, history)."""
    hp, temperature = config.training, config.method.temperature
    device = rows.x.device
    optimizer = torch.optim.Adam(
        student.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
    )
    shuffle = torch.Generator(device="cpu").manual_seed(hp.seed)
    shifts = torch.Generator(device="cpu").manual_seed(hp.seed + 1)
    n = len(rows.x)
    transfer_rows = n - rows.labeled_rows
    val_x, val_y, teacher_val = validation
    history: list[EpochRecord] = []
    # The cnn student always normalizes, whatever spec.batch_norm says: ask the model.
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules())
    stepped = _split_standardize(student)[1] if rows.standardized else student
    hooks = current_hooks()
    run = hooks.next_run()
    step_check = hooks.on_step
    first_epoch = 1
    saved = hooks.checkpoints.load(run) if hooks.checkpoints is not None else None
    if saved is not None:
        state = unpack_state(saved)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle"])
        shifts.set_state(state["shifts"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochRecord(**record) for record in state["history"]]
        first_epoch = int(state["epoch"]) + 1
        if hooks.on_resume is not None:
            hooks.on_resume(run, first_epoch - 1)
    for epoch in range(first_epoch, hp.epochs + 1):
        epoch_start = time.perf_counter()
        student.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        stop = config.method.kd_stop_epoch
        epoch_alpha = 1.0 if stop is not None and epoch > stop else alpha
        # Detached per-step terms, summed once at the end of the epoch: no per-step reductions.
        step_terms: list[tuple[torch.Tensor, torch.Tensor]] = []
        step_sizes: list[int] = []
        transfer_terms: list[torch.Tensor] = []
        for start in range(0, n, hp.batch_size):
            idx = order[start : start + hp.batch_size]
            if len(idx) < 2 and n > 1 and has_batch_norm:
                continue  # batch norm cannot train on a single row
            if step_check is not None:
                step_check()
            inputs, targets = rows.x[idx], rows.targets[idx]
            if hp.jitter_pixels:
                inputs = jitter(inputs, hp.jitter_pixels, shifts)
                if teacher_on_batch is not None:
                    targets = torch.as_tensor(
                        teacher_on_batch(inputs.cpu().numpy()), dtype=torch.float32, device=device
                    )
            out = stepped(inputs)
            labels = rows.labels[idx] if rows.labels is not None else None
            loss, soft_rows = kd_loss_rows(
                out,
                targets,
                labels,
                temperature,
                epoch_alpha,
                has_unlabeled=transfer_rows > 0,
                per_row=transfer_rows > 0,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            step_terms.append((loss.hard.detach(), loss.soft.detach()))
            step_sizes.append(len(idx))
            if soft_rows is not None:
                transfer_terms.append((soft_rows.detach() * rows.is_transfer[idx]).sum())
        hard, soft, soft_transfer_sum = _epoch_sums(step_terms, step_sizes, transfer_terms)
        total = finite_loss(epoch_alpha * hard + (1.0 - epoch_alpha) * soft, "training", epoch)
        val_logits = predict_logits(student, val_x, device=device)
        val_acc = accuracy(val_logits, val_y)
        if val_acc is None and len(val_logits):
            val_acc = agreement(val_logits, teacher_val)
        record = EpochRecord(
            epoch=epoch,
            loss=total / n,
            hard_loss=hard / n,
            soft_loss=soft / n,
            validation_accuracy=val_acc,
            seconds=time.perf_counter() - epoch_start,
            soft_loss_labeled=(
                (soft - soft_transfer_sum) / rows.labeled_rows if transfer_rows else None
            ),
            soft_loss_transfer=soft_transfer_sum / transfer_rows if transfer_rows else None,
        )
        history.append(record)
        if hooks.checkpoints is not None:
            hooks.checkpoints.save(
                run,
                epoch,
                pack_state(
                    {
                        "model": student.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "shuffle": shuffle.get_state(),
                        "shifts": shifts.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "history": [asdict(r) for r in history],
                        "epoch": epoch,
                    }
                ),
            )
        if on_epoch is not None:
            on_epoch(record)
    return history


def _epoch_sums(
    terms: list[tuple[torch.Tensor, torch.Tensor]],
    sizes: list[int],
    transfer: list[torch.Tensor],
) -> tuple[float, float, float]:
    """Row-weighted sums of an epoch's hard and soft terms, and the soft term's sum over
    transfer rows."""
    if not terms:
        return 0.0, 0.0, 0.0
    stacked = torch.stack([torch.stack(pair) for pair in terms])
    weights = torch.tensor(sizes, dtype=stacked.dtype, device=stacked.device)
    hard, soft = (stacked * weights[:, None]).sum(0).tolist()
    transfer_sum = float(torch.stack(transfer).sum()) if transfer else 0.0
    return hard, soft, transfer_sum


def _split_standardize(student: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A standardizing student's two parts: its leading Standardize and the layers after it."""
    if not (
        isinstance(student, nn.Sequential)
        and len(student) == 2
        and isinstance(student[0], Standardize)
    ):
        raise ValueError("rows were standardized up front for a student that does not standardize")
    return student[0], student[1]


def gap_closed(student: float | None, scratch: float | None, teacher: float | None) -> float | None:
    """(acc_kd - acc_scratch) / (acc_teacher - acc_scratch), METHODS.md §8."""
    if student is None or scratch is None or teacher is None or teacher <= scratch:
        return None
    return (student - scratch) / (teacher - scratch)


def distill(
    config: DistillConfig,
    teacher: Teacher,
    splits: Splits,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    device: str | None = None,
    cache: LogitCache | None = None,
    on_baseline_epoch: Callable[[EpochRecord], None] | None = None,
) -> DistillOutcome:
    """Train a student on the teacher's softened outputs, and (config.baseline) the same
    student from scratch on the labeled rows with the same budget and seed; evaluate both on
    the test split.

    The callbacks may raise to abort (the caller's cancellation); the exception propagates."""
    stage = on_stage or (lambda _: None)
    run_on = torch.device(device) if device else default_device()
    method = config.method

    stage("teacher_outputs")
    # The teacher's outputs are computed once (and cached across jobs when a cache is given):
    # nothing random reaches the teacher's input per epoch.
    teacher_train = teacher_logits(teacher, splits.train.x, cache, "the training rows")
    teacher_val = teacher_logits(teacher, splits.validation.x, cache, "the validation rows")
    teacher_test = teacher_logits(teacher, splits.test.x, cache, "the test rows")
    transfer_x = [part.x for part in splits.transfer]
    teacher_transfer = [
        teacher_logits(teacher, part.x, cache, f"the transfer rows from {part.source}")
        for part in splits.transfer
    ]
    labeled_rows = len(splits.train.x)
    validation = (splits.validation.x, splits.validation.y, teacher_val)

    stage("training")
    x = torch.as_tensor(
        np.concatenate([splits.train.x, *transfer_x]), dtype=torch.float32, device=run_on
    )
    is_transfer = torch.zeros(len(x), dtype=torch.float32, device=run_on)
    is_transfer[labeled_rows:] = 1.0
    train_labels = (
        torch.as_tensor(splits.train.y, dtype=torch.long, device=run_on)
        if splits.train.y is not None
        else None
    )
    labels = None
    hard_term = method.alpha > 0 or method.kd_stop_epoch is not None
    if train_labels is not None and hard_term:
        labels = torch.full((len(x),), UNLABELED, dtype=torch.long, device=run_on)
        labels[:labeled_rows] = train_labels
    rows = _TrainingRows(
        x=x,
        targets=torch.as_tensor(
            np.concatenate([teacher_train, *teacher_transfer]), dtype=torch.float32, device=run_on
        ),
        labels=labels,
        is_transfer=is_transfer,
        labeled_rows=labeled_rows,
    )
    torch.manual_seed(config.training.seed)
    standardization = (
        fit_standardization(splits.train.x, per_channel=config.student.architecture == "cnn")
        if config.student.normalize
        else None
    )
    student = build_student(
        config.student, teacher.input_shape, teacher.num_classes, standardization
    ).to(run_on)
    hint_report = None
    if method.hint_output is not None:
        stage("hints")
        hint_of = getattr(teacher, "hint", None)
        if hint_of is None:
            raise ValueError("hints need a teacher that exposes intermediate tensors (ONNX)")
        hint_report = hint_stage(
            student,
            x[:labeled_rows],
            finite_teacher_outputs(
                np.asarray(hint_of(splits.train.x, method.hint_output)),
                f"the hint tensor {method.hint_output!r}",
            ),
            method.hint_epochs,
            config.training.batch_size,
            config.training.learning_rate,
            config.training.seed,
        )
        hint_report["teacher_output"] = method.hint_output
        stage("training")
    if standardization is not None and not config.training.jitter_pixels:
        # Once, up front (after the hint stage, which reads raw rows); the raw copy is dropped.
        # Jitter shifts raw images (zero fill), so it keeps the per-batch layer.
        with torch.no_grad():
            x = _split_standardize(student)[0](x)
        rows = replace(rows, x=x, standardized=True)
    started = time.perf_counter()
    history = _fit(
        student,
        rows,
        config,
        method.alpha,
        validation,
        on_epoch,
        lambda b: finite_teacher_outputs(teacher.logits(b), "a jittered training batch"),
    )
    train_seconds = time.perf_counter() - started

    scratch_history: list[EpochRecord] = []
    scratch_test: np.ndarray | None = None
    baseline_note = None
    if config.baseline and train_labels is None:
        baseline_note = "skipped: the training data has no labels to learn from without a teacher"
    elif config.baseline and train_labels is not None:
        stage("baseline")
        # Same student, rows, budget and seed; hard labels only, so no transfer rows.
        scratch_rows = _TrainingRows(
            x=rows.x[:labeled_rows],
            targets=rows.targets[:labeled_rows],
            labels=train_labels,
            is_transfer=is_transfer[:labeled_rows],
            labeled_rows=labeled_rows,
            standardized=rows.standardized,
        )
        torch.manual_seed(config.training.seed)
        scratch = build_student(
            config.student, teacher.input_shape, teacher.num_classes, standardization
        )
        scratch = scratch.to(run_on)
        scratch_history = _fit(scratch, scratch_rows, config, 1.0, validation, on_baseline_epoch)
        scratch_test = predict_logits(scratch, splits.test.x, device=run_on)

    stage("evaluating")
    student_test = predict_logits(student, splits.test.x, device=run_on)
    student = student.cpu().eval()
    teacher_acc = accuracy(teacher_test, splits.test.y)
    student_acc = accuracy(student_test, splits.test.y)
    scratch_acc = accuracy(scratch_test, splits.test.y) if scratch_test is not None else None
    metrics: dict[str, Any] = {
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_acc,
        "scratch_accuracy": scratch_acc,
        "gap_closed": gap_closed(student_acc, scratch_acc, teacher_acc),
        "agreement": agreement(student_test, teacher_test),
        "scratch_agreement": (
            agreement(scratch_test, teacher_test) if scratch_test is not None else None
        ),
        "teacher_parameters": teacher.parameters,
        "student_parameters": count_parameters(student),
        "train_seconds": train_seconds,
        "device": str(run_on),
        "test_rows": len(splits.test.x),
        "transfer": {
            "labeled_rows": labeled_rows,
            "transfer_rows": len(x) - labeled_rows,
            "sources": {part.source: len(part.x) for part in splits.transfer},
        },
        "baseline": baseline_note or ("trained" if config.baseline else "off"),
        "hint": hint_report,
        "evaluation": {
            "teacher": classification_report(teacher_test, splits.test.y),
            "student": classification_report(student_test, splits.test.y),
            "scratch": (
                classification_report(scratch_test, splits.test.y)
                if scratch_test is not None
                else None
            ),
        },
    }
    return DistillOutcome(
        student=student, history=history, metrics=metrics, scratch_history=scratch_history
    )
