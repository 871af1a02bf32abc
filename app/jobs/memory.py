"""What a job will need on its worker, estimated at submission from its spec alone.

Pure arithmetic on the spec and the datasets' sizes (no torch): the parameters of every model
the job trains (the student, its scratch twin, teacher assistants, a cross-domain VAE) and the
bytes a worker holds at its peak:

- data: every row of the job's datasets as float32 once on the host, the training and transfer
  rows twice more on the device (the concatenated copy, and its standardized copy while it is
  made), and the teacher's logits for them (host and device);
- models: 4 bytes a parameter each for the weights, their gradients and Adam's two moments, and
  24 more for the checkpoint written after every epoch (serialized, then copied to the store);
  with a baseline, the distilled student's weights stay while the scratch student trains;
- activations: the values a training batch keeps for the backward pass, and their gradients.

The figures are upper bounds (the worker frees some of this as it goes), so a job under the
limit fits in that much memory (README, "Security": DISTILLERY_MAX_JOB_MEMORY_BYTES)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

FLOAT = 4
# Weights, gradients, Adam's two moments; and the checkpoint of the last three, twice.
TRAINING_BYTES_PER_PARAMETER = 4 * FLOAT + 24
EVAL_BATCH = 1024  # the engine predicts in batches of this many rows
VAE_BATCH = 128


@dataclass(frozen=True)
class Layout:
    """A student (or assistant) as the spec gives it."""

    architecture: str  # "mlp" | "cnn"
    hidden_sizes: tuple[int, ...]
    channels: tuple[int, ...]
    batch_norm: bool = False
    dropout: float = 0.0

    def scaled(self, factor: float) -> Layout:
        """Every layer's width times `factor` (what the engine's sizing does)."""
        if self.architecture == "cnn":
            return replace(self, channels=_widen(self.channels, factor))
        return replace(self, hidden_sizes=_widen(self.hidden_sizes, factor))


def _widen(sizes: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * factor)) for w in sizes)


def parameters(layout: Layout, input_shape: Sequence[int], classes: int) -> int:
    """Exactly what worker/engine/students.py builds (its Standardize holds buffers only)."""
    if layout.architecture == "cnn":
        kernel = 9 if len(input_shape) == 3 else 3
        total, width = 0, int(input_shape[0])
        for out in layout.channels:
            total += width * out * kernel + out + 2 * out  # conv, bias, batch norm
            width = out
        return total + width * classes + classes
    total, width = 0, math.prod(input_shape)
    for hidden in layout.hidden_sizes:
        total += width * hidden + hidden + (2 * hidden if layout.batch_norm else 0)
        width = hidden
    return total + width * classes + classes


def _activations_per_row(layout: Layout, input_shape: Sequence[int], classes: int) -> int:
    """Values a training row keeps for the backward pass."""
    if layout.architecture == "cnn":
        channels, spatial = int(input_shape[0]), [int(d) for d in input_shape[1:]]
        positions, size, total = math.prod(spatial), min(spatial), channels * math.prod(spatial)
        for out in layout.channels:
            total += 3 * out * positions  # conv, batch norm, relu
            if size >= 2:
                positions //= 2 ** len(spatial)
                size //= 2
                total += out * positions  # the pool's output
        return total + 6 * classes
    per_layer = 2 + int(layout.batch_norm) + 2 * int(layout.dropout > 0)
    return math.prod(input_shape) + per_layer * sum(layout.hidden_sizes) + 6 * classes


def activation_bytes(
    layout: Layout, input_shape: Sequence[int], classes: int, batch_size: int, jitter: bool
) -> int:
    """A training batch's activations and their gradients, or an evaluation batch's."""
    train = 2 * FLOAT * batch_size * _activations_per_row(layout, input_shape, classes)
    if jitter:  # the shifted copies of the batch: padded, permuted, gathered
        train += 4 * FLOAT * batch_size * math.prod(input_shape)
    widest = max([math.prod(input_shape), *layout.hidden_sizes, *layout.channels])
    evaluate = FLOAT * EVAL_BATCH * (math.prod(input_shape) + 2 * widest)
    return max(train, evaluate)


def sized(layout: Layout, input_shape: Sequence[int], classes: int, budget: int) -> Layout:
    """The widest scaling of `layout` with at most `budget` parameters (as the engine sizes)."""
    low, high = 1e-6, 1.0
    while parameters(layout.scaled(high), input_shape, classes) <= budget and high < 1e6:
        low, high = high, high * 2
    for _ in range(60):
        middle = math.sqrt(low * high)
        fits = parameters(layout.scaled(middle), input_shape, classes) <= budget
        low, high = (middle, high) if fits else (low, middle)
    return layout.scaled(low)


def vae_parameters(target_features: int, source_features: int, hidden: int, latent: int) -> int:
    """worker/engine/vae.py: one encoder (to mean and log-variance) and two decoders."""
    encoder = target_features * hidden + hidden + hidden * hidden + hidden + hidden * 2 * latent
    encoder += 2 * latent
    decoders = sum(
        latent * hidden + hidden + hidden * hidden + hidden + hidden * out + out
        for out in (target_features, source_features)
    )
    return encoder + decoders


@dataclass(frozen=True)
class Rows:
    """Rows of the job's data: all of it (host), and what trains (device)."""

    all: int
    training: int
    features: int
    classes: int

    @property
    def bytes(self) -> int:
        inputs = FLOAT * self.features * (self.all + 2 * self.training)
        logits = FLOAT * self.classes * (self.all + self.training)
        return inputs + logits + 12 * self.training  # labels and transfer flags


@dataclass(frozen=True)
class Estimate:
    data_bytes: int
    model_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.data_bytes + self.model_bytes + self.activation_bytes

    @property
    def largest(self) -> str:
        """Which part dominates: 'data', 'model' or 'activations'."""
        parts = {
            "data": self.data_bytes,
            "model": self.model_bytes,
            "activations": self.activation_bytes,
        }
        return max(parts, key=lambda k: parts[k])


def training_estimate(
    rows: Rows,
    steps: Sequence[tuple[Layout, int]],
    input_shape: Sequence[int],
    batch_size: int,
    jitter: bool,
    baseline: bool,
) -> Estimate:
    """`steps`: each model trained in turn with its parameter count (assistants, then the
    student); the earlier ones' weights stay (they are exported at the end)."""
    kept = sum(FLOAT * count for _, count in steps[:-1])
    training = max(TRAINING_BYTES_PER_PARAMETER * count for _, count in steps)
    if baseline:
        kept += FLOAT * steps[-1][1]
    activations = max(
        activation_bytes(layout, input_shape, rows.classes, batch_size, jitter)
        for layout, _ in steps
    )
    return Estimate(rows.bytes, kept + training, activations)


def vae_estimate(
    target_rows: int,
    source_rows: int,
    target_features: int,
    source_features: int,
    hidden: int,
    latent: int,
) -> Estimate:
    count = vae_parameters(target_features, source_features, hidden, latent)
    data = 2 * FLOAT * (target_rows * target_features + source_rows * source_features)
    per_row = target_features + source_features + 4 * hidden + 2 * latent
    return Estimate(data, TRAINING_BYTES_PER_PARAMETER * count, 2 * FLOAT * VAE_BATCH * per_row)
