"""Distillation losses (see docs/methods.md §1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

#: Label of a transfer row: the soft term learns from it, the hard term skips it.
UNLABELED = -1


class KDLoss(NamedTuple):
    total: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> KDLoss:
    """alpha * CE(y, z) + (1 - alpha) * T^2 * KL(p_T || q_T), KL averaged over the batch.

    `hard` is 0 when alpha == 0 or there are no labels; rows labeled UNLABELED count in the
    soft term only."""
    return kd_loss_rows(student_logits, teacher_logits, labels, temperature, alpha)[0]


def kd_loss_rows(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    has_unlabeled: bool = True,
    per_row: bool = True,
    objective: str = "kl",
) -> tuple[KDLoss, torch.Tensor | None]:
    """kd_loss, plus the per-row soft term (to report labeled and transfer rows apart).

    alpha * CE(y, z) + (1 - alpha) * T^2 * KL(p_T || q_T), KL averaged over the batch.

    T^2 keeps the soft gradients' scale independent of T; the KL is a mean over rows
    ("batchmean"), not over elements, which would also divide by the number of classes.
    Rows labeled UNLABELED (transfer rows) count in the soft term only; a caller that knows
    no row is unlabeled says so with has_unlabeled=False. With per_row=False the soft term
    is one fused KL over the batch and no per-row terms are returned (fewer ops per step)."""
    soft_rows: torch.Tensor | None = None
    if objective == "mse" and alpha != 1:
        # Tang et al.'s objective for text: the logits themselves, no temperature.
        soft_rows = ((student_logits - teacher_logits) ** 2).mean(dim=1)
        soft = soft_rows.mean()
        if not per_row:
            soft_rows = None
    elif alpha == 1:  # hard labels only (the scratch baseline): no need for the soft term
        soft = torch.zeros((), device=student_logits.device)
        if per_row:
            soft_rows = torch.zeros(len(student_logits), device=student_logits.device)
    else:
        log_q = F.log_softmax(student_logits / temperature, dim=1)
        log_p = F.log_softmax(teacher_logits / temperature, dim=1)
        if per_row:
            soft_rows = (log_p.exp() * (log_p - log_q)).sum(dim=1) * temperature**2
            soft = soft_rows.mean()
        else:
            soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2
    if labels is None or alpha == 0:
        hard = torch.zeros((), device=student_logits.device)
    elif not has_unlabeled:  # every row labeled: the plain mean, fewer ops per step
        hard = F.cross_entropy(student_logits, labels)
    else:
        labeled = (labels != UNLABELED).sum().clamp(min=1)
        hard = (
            F.cross_entropy(student_logits, labels, ignore_index=UNLABELED, reduction="sum")
            / labeled
        )
    total = alpha * hard + (1.0 - alpha) * soft
    return KDLoss(total=total, hard=hard, soft=soft), soft_rows
