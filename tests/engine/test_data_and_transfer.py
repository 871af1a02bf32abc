"""Splits and synthetic transfer sets: seeded, stratified, shaped like the inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.engine import synthesis
from worker.engine.data import random_split, stratified_split
from worker.engine.transfer import synthesize


def test_stratified_split_is_seeded_disjoint_and_stratified() -> None:
    y = np.repeat(np.arange(5), [100, 50, 30, 20, 10])
    train, val, test = stratified_split(y, (0.7, 0.15, 0.15), seed=1)
    again = stratified_split(y, (0.7, 0.15, 0.15), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(test, stratified_split(y, (0.7, 0.15, 0.15), seed=2)[2])
    together = np.concatenate([train, val, test])
    assert len(together) == len(y) == len(set(together.tolist()))
    for label in range(5):
        assert (y[test] == label).sum() >= 1 and (y[val] == label).sum() >= 1
    assert (y[test] == 0).sum() == 15


def test_random_split_sizes() -> None:
    train, val, test = random_split(200, (0.7, 0.15, 0.15), seed=0)
    assert (len(train), len(val), len(test)) == (140, 30, 30)


@pytest.mark.parametrize("method", ["mixup", "noise", "shift"])
@pytest.mark.parametrize("shape", [(40,), (1, 8, 8), (2, 16)])
def test_synthesis_is_deterministic_and_shaped(method: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal((50, *shape)).astype(np.float32)
    spec = synthesis(method, 123, seed=5)
    made = synthesize(x, spec)
    assert made.shape == (123, *shape) and made.dtype == np.float32
    assert np.array_equal(made, synthesize(x, spec))
    assert not np.array_equal(made, synthesize(x, synthesis(method, 123, seed=6)))
    assert np.isfinite(made).all()


def test_mixup_rows_lie_between_their_parents() -> None:
    x = np.stack([np.zeros(4), np.ones(4)]).astype(np.float32)
    made = synthesize(x, synthesis("mixup", 500, seed=0))
    assert made.min() >= 0.0 and made.max() <= 1.0
    assert np.allclose(made, made[:, :1])  # each row is one convex weight of 0 and 1


def test_shift_moves_images_without_wrapping() -> None:
    image = np.zeros((1, 1, 8, 8), np.float32)
    image[0, 0, 0, 0] = 1.0  # a corner pixel: wrapping would show it on the far side
    made = synthesize(image, synthesis("shift", 200, seed=0, shift_pixels=2))
    assert made.sum(axis=(1, 2, 3)).max() == 1.0
    rows, cols = np.nonzero(made[:, 0].sum(axis=0))
    assert rows.max() <= 2 and cols.max() <= 2
    assert len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) > 1


def test_synthesis_works_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.engine.transfer as transfer

    x = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    whole = synthesize(x, synthesis("noise", 1000, seed=1))
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 64)
    chunked = synthesize(x, synthesis("noise", 1000, seed=1))
    assert chunked.shape == whole.shape
    assert abs(float(chunked.std()) - float(whole.std())) < 0.1


def test_every_part_gets_a_row_of_small_classes() -> None:
    y = np.repeat(np.arange(4), [3, 4, 5, 40])
    for fractions in ((0.2, 0.4, 0.4), (0.7, 0.15, 0.15)):
        parts = stratified_split(y, fractions, seed=0)
        for part in parts:
            assert set(y[part].tolist()) == {0, 1, 2, 3}, fractions
        assert sum(len(p) for p in parts) == len(y)
