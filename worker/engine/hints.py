"""FitNets hints (Romero et al., docs/methods.md §5): before KD, a student layer learns, through a
small regressor, to predict an intermediate tensor of the teacher."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worker.engine.finite import finite_loss


def hint_layer(student: nn.Module) -> nn.Module:
    """The student's middle layer: the activation after its middle hidden layer (mlp) or
    middle conv block (cnn)."""
    activations = [m for m in student.modules() if isinstance(m, nn.ReLU)]
    if not activations:
        raise ValueError("the student has no hidden layer to take a hint")
    return activations[(len(activations) - 1) // 2]


@dataclass(frozen=True)
class HintReport:
    teacher_output: str
    epochs: int
    student_width: int
    teacher_width: int
    mse: list[float]  # per epoch


def hint_stage(
    student: nn.Module,
    x: torch.Tensor,
    targets: np.ndarray,
    teacher_output: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> HintReport:
    """Train the student's layers up to the hint layer, and a linear regressor on top of it,
    to predict the teacher's tensor `teacher_output` (MSE). Reports the per-epoch loss."""
    device = x.device
    layer = hint_layer(student)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            student.eval()
            student(x[:2])
        width = math.prod(captured[0].shape[1:])
        captured.clear()
        target = torch.as_tensor(targets, dtype=torch.float32, device=device)
        regressor = nn.Linear(width, target.shape[1]).to(device)
        optimizer = torch.optim.Adam(
            [*student.parameters(), *regressor.parameters()], lr=learning_rate
        )
        shuffle = torch.Generator(device="cpu").manual_seed(seed)
        losses = []
        for epoch in range(1, epochs + 1):
            student.train()
            order = torch.randperm(len(x), generator=shuffle).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2:
                    continue
                captured.clear()
                student(x[idx])
                loss = F.mse_loss(regressor(captured[0].flatten(1)), target[idx])
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
                total += loss.detach() * len(idx)
            losses.append(finite_loss(float(total) / len(x), "hint", epoch))
    finally:
        handle.remove()
    return HintReport(
        teacher_output=teacher_output,
        epochs=epochs,
        student_width=width,
        teacher_width=int(target.shape[1]),
        mse=losses,
    )
