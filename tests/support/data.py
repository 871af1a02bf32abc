"""Datasets the tests and benches make from what is bundled or generated (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits(cut: int = 1300, seed: int = 0) -> Digits:
    """scikit-learn's bundled 8x8 digits, shuffled with a seed, as images in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return Digits(x[:cut], y[:cut], x[cut:], y[cut:])


def save_npz(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """A dataset upload as the README describes it: x (N, ...) and optional integer y (N,)."""
    if y is None:
        np.savez(path, x=x)
    else:
        np.savez(path, x=x, y=y)
    return path
