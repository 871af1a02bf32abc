"""Ensembles of teachers (docs/methods.md §2): the target is the mean of their softened outputs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from worker.engine.teachers.base import OutputKind, Teacher


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    values: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return values


class EnsembleTeacher:
    """Acts as one teacher whose softened output is the mean of the members' at temperature T.

    Its logits are T * log(mean_k softmax(v_k / T)), so softmax(logits / T) is exactly the
    mean of the members' p_T and the usual KD loss needs no special case."""

    format = "ensemble"
    output_kind: OutputKind = "logits"

    def __init__(self, members: Sequence[Teacher], temperature: float) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two teachers")
        first = members[0]
        for member in members[1:]:
            if member.input_shape != first.input_shape or member.num_classes != first.num_classes:
                raise ValueError("ensemble members must share input shape and classes")
        self.members = list(members)
        self.temperature = temperature
        self.input_shape = first.input_shape
        self.num_classes = first.num_classes
        self.parameters = sum(m.parameters for m in members)
        self.output_name = "+".join(m.output_name for m in members)
        prints = [m.fingerprint for m in members]
        self.fingerprint: str | None = (
            hashlib.sha256(f"ensemble:{temperature}:{prints}".encode()).hexdigest()
            if all(prints)
            else None
        )

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        t = self.temperature
        # Each member in its own batches unless the caller names them.
        stacked = np.stack([_log_softmax(m.logits(x, batch_size) / t) for m in self.members])
        # log of the mean of probabilities, computed in log space for stability
        top = stacked.max(axis=0)
        mean_log = top + np.log(np.exp(stacked - top).mean(axis=0))
        values: np.ndarray = (t * mean_log).astype(np.float32)
        return values
