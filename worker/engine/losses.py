"""Distillation losses (see METHODS.md §1)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


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

    T^2 keeps the soft gradients' scale independent of T; "batchmean" (not "mean") because
    "mean" would also divide by the number of classes."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2
    if labels is None or alpha == 0:
        hard = torch.zeros((), device=student_logits.device)
    else:
        hard = F.cross_entropy(student_logits, labels)
    total = alpha * hard + (1.0 - alpha) * soft
    return KDLoss(total=total, hard=hard, soft=soft)
