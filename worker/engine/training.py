"""The distillation loop: teacher outputs once, data on the device, a plain training loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.config import DistillConfig
from worker.engine.data import Splits
from worker.engine.logit_cache import LogitCache, teacher_logits
from worker.engine.losses import UNLABELED, kd_loss
from worker.engine.students import build_student, count_parameters, default_device
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


def distill(
    config: DistillConfig,
    teacher: Teacher,
    splits: Splits,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    device: str | None = None,
    cache: LogitCache | None = None,
) -> DistillOutcome:
    """Train a student on the teacher's softened outputs; evaluate on the test split.

    `on_epoch` may raise to abort (the caller's cancellation); the exception propagates."""
    stage = on_stage or (lambda _: None)
    run_on = torch.device(device) if device else default_device()
    train, hp, method = config.training, config.training, config.method

    stage("teacher_outputs")
    # The teacher's outputs are computed once (and cached across jobs when a cache is given):
    # nothing random reaches the teacher's input per epoch.
    teacher_train = teacher_logits(teacher, splits.train.x, cache)
    teacher_val = teacher_logits(teacher, splits.validation.x, cache)
    teacher_test = teacher_logits(teacher, splits.test.x, cache)
    transfer_x = [part.x for part in splits.transfer]
    teacher_transfer = [teacher_logits(teacher, part, cache) for part in transfer_x]
    labeled_rows = len(splits.train.x)

    stage("training")
    torch.manual_seed(train.seed)
    student = build_student(config.student, teacher.input_shape, teacher.num_classes).to(run_on)
    optimizer = torch.optim.Adam(
        student.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
    )
    x = torch.as_tensor(
        np.concatenate([splits.train.x, *transfer_x]), dtype=torch.float32, device=run_on
    )
    targets = torch.as_tensor(
        np.concatenate([teacher_train, *teacher_transfer]), dtype=torch.float32, device=run_on
    )
    zero = torch.zeros((), device=run_on)
    is_transfer = torch.zeros(len(x), dtype=torch.float32, device=run_on)
    is_transfer[labeled_rows:] = 1.0
    transfer_rows = len(x) - labeled_rows
    labels = None
    if splits.train.y is not None and method.alpha > 0:
        labels = torch.full((len(x),), UNLABELED, dtype=torch.long, device=run_on)
        labels[:labeled_rows] = torch.as_tensor(splits.train.y, dtype=torch.long, device=run_on)
    shuffle = torch.Generator(device="cpu").manual_seed(train.seed)
    n = len(x)
    history: list[EpochRecord] = []
    started = time.perf_counter()
    for epoch in range(1, hp.epochs + 1):
        epoch_start = time.perf_counter()
        student.train()
        order = torch.randperm(n, generator=shuffle).to(run_on)
        sums = torch.zeros(4, device=run_on)
        for start in range(0, n, hp.batch_size):
            idx = order[start : start + hp.batch_size]
            if len(idx) < 2 and n > 1 and config.student.batch_norm:
                continue  # batch norm cannot train on a single row
            out = student(x[idx])
            loss = kd_loss(
                out,
                targets[idx],
                labels[idx] if labels is not None else None,
                method.temperature,
                method.alpha,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            rows = len(idx)
            soft_transfer = (
                (loss.soft_rows.detach() * is_transfer[idx]).sum() if transfer_rows else zero
            )
            sums += torch.stack(
                [
                    loss.total.detach() * rows,
                    loss.hard.detach() * rows,
                    loss.soft.detach() * rows,
                    soft_transfer,
                ]
            )
        total, hard, soft, soft_transfer_sum = sums.tolist()
        means = [total / n, hard / n, soft / n]
        val_logits = predict_logits(student, splits.validation.x, device=run_on)
        val_acc = accuracy(val_logits, splits.validation.y)
        if val_acc is None and len(val_logits):
            val_acc = agreement(val_logits, teacher_val)
        record = EpochRecord(
            epoch=epoch,
            loss=means[0],
            hard_loss=means[1],
            soft_loss=means[2],
            validation_accuracy=val_acc,
            seconds=time.perf_counter() - epoch_start,
            soft_loss_labeled=(soft - soft_transfer_sum) / labeled_rows if transfer_rows else None,
            soft_loss_transfer=soft_transfer_sum / transfer_rows if transfer_rows else None,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    train_seconds = time.perf_counter() - started

    stage("evaluating")
    student_test = predict_logits(student, splits.test.x, device=run_on)
    student = student.cpu().eval()
    metrics: dict[str, Any] = {
        "teacher_accuracy": accuracy(teacher_test, splits.test.y),
        "student_accuracy": accuracy(student_test, splits.test.y),
        "agreement": agreement(student_test, teacher_test),
        "teacher_parameters": teacher.parameters,
        "student_parameters": count_parameters(student),
        "train_seconds": train_seconds,
        "device": str(run_on),
        "test_rows": len(splits.test.x),
        "transfer": {
            "labeled_rows": labeled_rows,
            "transfer_rows": transfer_rows,
            "sources": {part.source: len(part.x) for part in splits.transfer},
        },
    }
    return DistillOutcome(student=student, history=history, metrics=metrics)
