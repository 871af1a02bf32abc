"""In-memory splits of a dataset, and seeded ways to make them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySplit:
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray | None  # int64, (N,)


@dataclass(frozen=True)
class TransferRows:
    """Unlabeled inputs for the distillation term, and where they came from."""

    source: str  # a dataset id, or "mixup" / "noise" / "shift"
    x: np.ndarray


@dataclass(frozen=True)
class Splits:
    train: ArraySplit
    validation: ArraySplit
    test: ArraySplit
    transfer: tuple[TransferRows, ...] = ()


def _counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Rows for validation and test out of n; a part asked for gets at least one row."""
    val = int(round(n * fractions[1])) if fractions[1] > 0 else 0
    test = int(round(n * fractions[2])) if fractions[2] > 0 else 0
    if fractions[1] > 0 and n >= 3:
        val = max(val, 1)
    if fractions[2] > 0 and n >= 3:
        test = max(test, 1)
    # Training keeps at least one row of every class that has three or more.
    while fractions[0] > 0 and n >= 3 and val + test >= n:
        if val >= test and val > 1:
            val -= 1
        elif test > 1:
            test -= 1
        else:
            break
    return val, test


def random_split(
    n: int, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    val, test = _counts(n, fractions)
    return np.sort(order[val + test :]), np.sort(order[:val]), np.sort(order[val : val + test])


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, validation, test) keeping each class's share in every part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        val, test = _counts(len(rows), fractions)
        parts[1].append(rows[:val])
        parts[2].append(rows[val : val + test])
        parts[0].append(rows[val + test :])
    train, validation, held = (
        np.sort(np.concatenate(p)).astype(np.int64) if p else np.array([], np.int64) for p in parts
    )
    return train, validation, held
