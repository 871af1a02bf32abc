"""One declarative config per distillation run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class StudentSpec:
    architecture: Literal["mlp", "cnn"] = "mlp"
    hidden_sizes: tuple[int, ...] = (128,)
    dropout: float = 0.0
    batch_norm: bool = False
    channels: tuple[int, ...] = (16, 32)
    # Standardize inputs with statistics of the training rows, inside the model (and ONNX).
    normalize: bool = True


@dataclass(frozen=True)
class KDMethod:
    """Hinton's soft targets. `alpha` weighs the hard-label term (torchdistill's convention)."""

    temperature: float = 4.0
    alpha: float = 0.1
    # Early-stopped KD (METHODS.md §4): after this epoch, hard labels only (alpha = 1).
    kd_stop_epoch: int | None = None
    # FitNets (METHODS.md §5): the teacher tensor a student layer learns first, and for how long.
    hint_output: str | None = None
    hint_epochs: int = 5


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    # Shift/jitter augmentation of image inputs, up to this many pixels (0: off).
    jitter_pixels: int = 0


@dataclass(frozen=True)
class DistillConfig:
    student: StudentSpec = field(default_factory=StudentSpec)
    method: KDMethod = field(default_factory=KDMethod)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    # The same student trained from scratch in the same run, for comparison (METHODS.md §8).
    baseline: bool = True
