"""The training loop every method runs: rows already on the device, teacher outputs computed
beforehand, a plain optimizer loop with a checkpoint after every epoch.

Under run hooks (worker/engine/hooks.py) each step first calls a check that may stop the run,
and each epoch is checkpointed so that a later attempt resumes where this one stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.config import DistillConfig
from worker.engine.evaluation import accuracy, agreement
from worker.engine.finite import finite_loss
from worker.engine.hooks import CheckpointStore, current_hooks, pack_state, unpack_state
from worker.engine.losses import UNLABELED, kd_loss_rows
from worker.engine.students import Standardize


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


EpochCallback = Callable[[EpochRecord], None]


@dataclass(frozen=True)
class TrainingRows:
    """What one training run sees, already on the device."""

    x: torch.Tensor
    targets: torch.Tensor  # teacher logits, one row per input
    labels: torch.Tensor | None  # UNLABELED for transfer rows; None: no hard term
    is_transfer: torch.Tensor  # 1.0 on transfer rows, for reporting the soft term by source
    labeled_rows: int
    # x went through the student's Standardize layer once, up front: the training steps run
    # the layers after it, with no per-batch normalization a plain loop would not have.
    standardized: bool = False

    def hard_labeled(self) -> TrainingRows:
        """These rows for hard labels alone (early-stopped KD after its stop epoch): the
        data's labels where it has them, the teacher's argmax on the rest, so that transfer
        rows keep teaching after the soft term stops."""
        guess = self.targets.argmax(dim=1)
        labels = guess if self.labels is None else torch.where(
            self.labels == UNLABELED, guess, self.labels
        )
        return replace(self, labels=labels)

    def labeled(self, labels: torch.Tensor | None) -> TrainingRows:
        """The labeled rows alone (the scratch baseline), with these labels."""
        n = self.labeled_rows
        return TrainingRows(
            self.x[:n], self.targets[:n], labels, self.is_transfer[:n], n, self.standardized
        )


@dataclass(frozen=True)
class Validation:
    x: np.ndarray
    y: np.ndarray | None
    teacher: np.ndarray  # the teacher's logits: agreement stands in for accuracy without labels


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


def split_standardize(student: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A standardizing student's two parts: its leading Standardize and the layers after it."""
    if not (
        isinstance(student, nn.Sequential)
        and len(student) == 2
        and isinstance(student[0], Standardize)
    ):
        raise ValueError("rows were standardized up front for a student that does not standardize")
    return student[0], student[1]


class _Run:
    """The state one training run checkpoints: model, optimizer, RNGs, history."""

    def __init__(self, student: nn.Module, config: DistillConfig) -> None:
        hp = config.training
        self.student = student
        self.optimizer = torch.optim.Adam(
            student.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
        )
        self.shuffle = torch.Generator(device="cpu").manual_seed(hp.seed)
        self.shifts = torch.Generator(device="cpu").manual_seed(hp.seed + 1)
        self.history: list[EpochRecord] = []

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "shifts": self.shifts.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [asdict(r) for r in self.history],
            "epoch": epoch,
        }

    def restore(self, store: CheckpointStore | None, name: str) -> int:
        """Resume from the run's checkpoint, if an earlier attempt left one: the last epoch
        it finished (0 when starting afresh)."""
        saved = store.load(name) if store is not None else None
        if saved is None:
            return 0
        state = unpack_state(saved)
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["shuffle"])
        self.shifts.set_state(state["shifts"])
        torch.set_rng_state(state["torch_rng"])
        self.history = [EpochRecord(**record) for record in state["history"]]
        return int(state["epoch"])


@dataclass(frozen=True)
class _EpochSums:
    hard: float
    soft: float
    soft_transfer: float


def _epoch(
    run: _Run,
    rows: TrainingRows,
    config: DistillConfig,
    alpha: float,
    teacher_on_batch: Callable[[np.ndarray], np.ndarray] | None,
) -> _EpochSums:
    """One pass over the rows in a fresh order. Per-step terms stay on the device, detached,
    and are summed once at the end of the epoch: no per-step reductions."""
    hp, temperature, n = config.training, config.method.temperature, len(rows.x)
    student, device = run.student, rows.x.device
    student.train()
    stepped = split_standardize(student)[1] if rows.standardized else student
    # A cnn student always normalizes, whatever spec.batch_norm says: ask the model.
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules())
    step_check, transfer_rows = current_hooks().on_step, n - rows.labeled_rows
    order = torch.randperm(n, generator=run.shuffle).to(device)
    terms: list[tuple[torch.Tensor, torch.Tensor]] = []
    sizes: list[int] = []
    transfer_terms: list[torch.Tensor] = []
    for start in range(0, n, hp.batch_size):
        idx = order[start : start + hp.batch_size]
        if len(idx) < 2 and n > 1 and has_batch_norm:
            continue  # batch norm cannot train on a single row
        if step_check is not None:
            step_check()
        inputs, targets = rows.x[idx], rows.targets[idx]
        if hp.jitter_pixels:
            inputs = jitter(inputs, hp.jitter_pixels, run.shifts)
            if teacher_on_batch is not None:
                fresh = teacher_on_batch(inputs.cpu().numpy())
                targets = torch.as_tensor(fresh, dtype=torch.float32, device=device)
        labels = rows.labels[idx] if rows.labels is not None else None
        loss, soft_rows = kd_loss_rows(
            stepped(inputs),
            targets,
            labels,
            temperature,
            alpha,
            has_unlabeled=transfer_rows > 0,
            per_row=transfer_rows > 0,
            objective=config.method.loss,
        )
        run.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss.total)
        run.optimizer.step()
        terms.append((loss.hard.detach(), loss.soft.detach()))
        sizes.append(len(idx))
        if soft_rows is not None:
            transfer_terms.append((soft_rows.detach() * rows.is_transfer[idx]).sum())
    return _epoch_sums(terms, sizes, transfer_terms)


def _epoch_sums(
    terms: list[tuple[torch.Tensor, torch.Tensor]], sizes: list[int], transfer: list[torch.Tensor]
) -> _EpochSums:
    """Row-weighted sums of an epoch's hard and soft terms, and the soft term's sum over
    transfer rows: one reduction per epoch."""
    if not terms:
        return _EpochSums(0.0, 0.0, 0.0)
    stacked = torch.stack([torch.stack(pair) for pair in terms])
    weights = torch.tensor(sizes, dtype=stacked.dtype, device=stacked.device)
    hard, soft = (stacked * weights[:, None]).sum(0).tolist()
    return _EpochSums(hard, soft, float(torch.stack(transfer).sum()) if transfer else 0.0)


def _record(
    epoch: int,
    sums: _EpochSums,
    alpha: float,
    rows: TrainingRows,
    validation_accuracy: float | None,
    seconds: float,
) -> EpochRecord:
    n, transfer = len(rows.x), len(rows.x) - rows.labeled_rows
    total = finite_loss(alpha * sums.hard + (1.0 - alpha) * sums.soft, "training", epoch)
    return EpochRecord(
        epoch=epoch,
        loss=total / n,
        hard_loss=sums.hard / n,
        soft_loss=sums.soft / n,
        validation_accuracy=validation_accuracy,
        seconds=seconds,
        soft_loss_labeled=(sums.soft - sums.soft_transfer) / rows.labeled_rows
        if transfer
        else None,
        soft_loss_transfer=sums.soft_transfer / transfer if transfer else None,
    )


def _validation_accuracy(student: nn.Module, validation: Validation) -> float | None:
    logits = predict_logits(student, validation.x)
    found = accuracy(logits, validation.y)
    if found is None and len(logits):
        return agreement(logits, validation.teacher)
    return found


def fit(
    student: nn.Module,
    rows: TrainingRows,
    config: DistillConfig,
    alpha: float,
    validation: Validation,
    on_epoch: EpochCallback | None = None,
    teacher_on_batch: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[EpochRecord]:
    """Train for the configured epochs at this alpha (1.0 after kd_stop_epoch). With jitter,
    every batch is shifted afresh and (when `teacher_on_batch` is given) the teacher labels
    the shifted batch: no cache can serve it."""
    hooks = current_hooks()
    name = hooks.next_run()
    run = _Run(student, config)
    done = run.restore(hooks.checkpoints, name)
    if done and hooks.on_resume is not None:
        hooks.on_resume(name, done)
    stop = config.method.kd_stop_epoch
    after_stop = rows.hard_labeled() if stop is not None else rows
    for epoch in range(done + 1, config.training.epochs + 1):
        started = time.perf_counter()
        stopped = stop is not None and epoch > stop
        epoch_alpha, epoch_rows = (1.0, after_stop) if stopped else (alpha, rows)
        sums = _epoch(run, epoch_rows, config, epoch_alpha, teacher_on_batch)
        seen = _validation_accuracy(student, validation)
        record = _record(epoch, sums, epoch_alpha, rows, seen, time.perf_counter() - started)
        run.history.append(record)
        if hooks.checkpoints is not None:
            hooks.checkpoints.save(name, epoch, pack_state(run.state(epoch)))
        if on_epoch is not None:
            on_epoch(record)
    return run.history
