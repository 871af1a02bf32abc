"""Teachers the tests and benches make: trained on the spot, exported as users export them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TeacherFiles:
    """One trained teacher, as the two files a user may upload."""

    onnx: Path
    pt2: Path
    accuracy: float
    parameters: int


def save_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str | None = None,
    output_name: str | None = None,
) -> Path:
    """torch.onnx.export as the README advises (dynamo, one self-contained file), with a
    dynamic batch dimension."""
    names: dict[str, list[str]] = {}
    if input_name is not None:
        names["input_names"] = [input_name]
    if output_name is not None:
        names["output_names"] = [output_name]
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        dynamo=True,
        verbose=False,
        **names,  # type: ignore[arg-type]
    )
    return path


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """torch.export.save of the model, with a dynamic batch dimension."""
    program = torch.export.export(
        model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, path)
    return path


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Plain cross-entropy training with Adam, seeded."""
    torch.manual_seed(seed)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(inputs)).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[idx]), labels[idx]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((predicted == y).mean())


def digits_mlp_onnx(x: np.ndarray, y: np.ndarray, epochs: int, path: Path) -> Path:
    """A 64-128-10 MLP teacher for 8x8 digits, seeded, trained with Adam (3e-3, batch 64) and
    exported to ONNX: the engine tests' teacher."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(inputs)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[idx]), labels[idx]).backward()
            optimizer.step()
    return save_onnx(model, inputs[:2], path)
