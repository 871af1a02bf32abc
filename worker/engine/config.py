"""One declarative config per distillation run. The engine has no defaults of its own: a
job's values come from its spec (app/jobs/spec.py, where every default is defined once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from worker.engine.text.embeddings import StudentEmbeddings


@dataclass(frozen=True)
class TextVocabulary:
    """A text student's vocabulary: the teacher's token ids it keeps (those in the job's
    data), out of the teacher's vocabulary size."""

    kept: tuple[int, ...]
    teacher_vocab: int


@dataclass(frozen=True)
class StudentSpec:
    architecture: Literal["mlp", "cnn", "bag", "text_cnn", "bilstm", "transformer"]
    hidden_sizes: tuple[int, ...]
    dropout: float
    batch_norm: bool
    channels: tuple[int, ...]
    # Standardize inputs with statistics of the training rows, inside the model (and ONNX).
    normalize: bool
    # Text students: the embedding width and the vocabulary (the plan sets it from the data).
    embedding_dim: int = 64
    vocabulary: TextVocabulary | None = None
    # Text students: first rows of the embedding table, from the teacher's (None: random).
    embeddings: StudentEmbeddings | None = field(default=None, compare=False, repr=False)

    @property
    def reads_text(self) -> bool:
        return self.architecture in ("bag", "text_cnn", "bilstm", "transformer")


@dataclass(frozen=True)
class KDMethod:
    """Hinton's soft targets. `alpha` weighs the hard-label term (torchdistill's convention)."""

    temperature: float
    alpha: float
    # Early-stopped KD (docs/methods.md §4): after this epoch, hard labels only (alpha = 1).
    kd_stop_epoch: int | None
    # FitNets (docs/methods.md §5): the teacher tensor a student layer learns first, and for
    # how many epochs.
    hint_output: str | None
    hint_epochs: int
    # "kl": Hinton's softened KL; "mse": squared error on the logits (Tang et al., for text).
    loss: Literal["kl", "mse"] = "kl"


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    # Shift/jitter augmentation of image inputs, up to this many pixels (0: off).
    jitter_pixels: int


@dataclass(frozen=True)
class DistillConfig:
    student: StudentSpec
    method: KDMethod
    training: TrainingSpec
    # The same student trained from scratch in the same run, for comparison (docs/methods.md §8).
    baseline: bool
