"""Student architectures. A student takes exactly the teacher's input shape."""

from __future__ import annotations

import math

import torch
from torch import nn

from worker.engine.config import StudentSpec


def _mlp(spec: StudentSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in spec.hidden_sizes:
        layers.append(nn.Linear(width, hidden))
        if spec.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _cnn(spec: StudentSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) == 3:
        conv, norm, pool, gap = nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    elif len(input_shape) == 2:
        conv, norm, pool, gap = nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d  # type: ignore[assignment]
    else:
        raise ValueError(
            f"a cnn student needs inputs shaped (C, H, W) or (C, L), not {list(input_shape)}"
        )
    layers: list[nn.Module] = []
    channels = input_shape[0]
    size = min(input_shape[1:])
    for out in spec.channels:
        layers.append(conv(channels, out, kernel_size=3, padding=1))
        # A cnn student defaults to batch norm (METHODS.md §7); folded into the conv on export.
        layers.append(norm(out))
        layers.append(nn.ReLU())
        if size >= 2:
            layers.append(pool(2))
            size //= 2
        channels = out
    layers += [gap(1), nn.Flatten()]
    if spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


def build_student(spec: StudentSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if spec.architecture == "mlp":
        return _mlp(spec, input_shape, num_classes)
    if spec.architecture == "cnn":
        return _cnn(spec, input_shape, num_classes)
    raise ValueError(f"unknown student architecture {spec.architecture!r}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
