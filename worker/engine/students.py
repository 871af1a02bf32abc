"""Student architectures. A student takes exactly the teacher's input shape."""

from __future__ import annotations

import math

import numpy as np
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
        # A cnn student defaults to batch norm (docs/methods.md §7); folded into the conv on export.
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


class Standardize(nn.Module):
    """(x - mean) / std with statistics fitted on the training rows, kept as buffers so they
    travel inside the exported ONNX: the student takes raw inputs, exactly as the teacher."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(1.0 / std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale


def fit_standardization(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature statistics (mlp) or per-channel ones (cnn: shared across positions)."""
    axes = (0, *range(2, x.ndim)) if per_channel and x.ndim > 2 else (0,)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = np.where(std < 1e-6, 1.0, std)  # constant features pass through unscaled
    return mean.astype(np.float32), std.astype(np.float32)


def build_student(
    spec: StudentSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    standardization: tuple[np.ndarray, np.ndarray] | None = None,
) -> nn.Module:
    if spec.architecture == "mlp":
        body = _mlp(spec, input_shape, num_classes)
    elif spec.architecture == "cnn":
        body = _cnn(spec, input_shape, num_classes)
    elif spec.reads_text:
        from worker.engine.text.students import TextStudent

        if spec.vocabulary is None:
            raise ValueError("a text student needs its vocabulary")
        hidden = spec.hidden_sizes[0] if spec.hidden_sizes else 64
        text = TextStudent(
            spec.architecture,
            spec.vocabulary.kept,
            spec.vocabulary.teacher_vocab,
            spec.embedding_dim,
            hidden,
            num_classes,
            spec.dropout,
        )
        if spec.embeddings is not None:
            text.start_embeddings(spec.embeddings.vectors)
        return text
    else:
        raise ValueError(f"unknown student architecture {spec.architecture!r}")
    if standardization is None:
        return body
    return nn.Sequential(Standardize(*standardization), body)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
