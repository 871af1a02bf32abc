"""Synthetic transfer sets: inputs the teacher labels so the student sees more than the rows.

Each generator is deterministic for a seed and works in chunks, so a large set never needs
more than one chunk of scratch memory beyond its own output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

CHUNK_ROWS = 8192


@dataclass(frozen=True)
class SynthesisSpec:
    method: str  # "mixup" | "noise" | "shift" | "vae"
    size: int
    seed: int
    mixup_alpha: float  # Beta(a, a) mixing weights
    noise_sigma: float  # noise std as a multiple of each feature's std
    shift_pixels: int  # Hinton's MNIST teacher used 2-pixel jitter


def _mixup(x: np.ndarray, rows: int, rng: np.random.Generator, spec: SynthesisSpec) -> np.ndarray:
    first = rng.integers(0, len(x), rows)
    second = rng.integers(0, len(x), rows)
    lam = rng.beta(spec.mixup_alpha, spec.mixup_alpha, rows).astype(np.float32)
    lam = lam.reshape(rows, *([1] * (x.ndim - 1)))
    values: np.ndarray = lam * x[first] + (1.0 - lam) * x[second]
    return values


def _noise_factory(x: np.ndarray) -> Callable[..., np.ndarray]:
    scale = x.std(axis=0, keepdims=True).astype(np.float32)

    def noise(
        x: np.ndarray, rows: int, rng: np.random.Generator, spec: SynthesisSpec
    ) -> np.ndarray:
        base = x[rng.integers(0, len(x), rows)]
        jitter = rng.standard_normal(base.shape, dtype=np.float32) * scale * spec.noise_sigma
        values: np.ndarray = base + jitter
        return values

    return noise


def _shift_block(rows: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """Move rows by whole positions along their last len(offsets) axes, zero-filled (no wrap)."""
    out = np.zeros_like(rows)
    lead = rows.ndim - len(offsets)
    src: list[slice] = [slice(None)] * lead
    dst: list[slice] = [slice(None)] * lead
    for axis_len, shift in zip(rows.shape[lead:], offsets, strict=True):
        if shift >= 0:
            src.append(slice(0, axis_len - shift))
            dst.append(slice(shift, axis_len))
        else:
            src.append(slice(-shift, axis_len))
            dst.append(slice(0, axis_len + shift))
    out[tuple(dst)] = rows[tuple(src)]
    return out


def _shift(x: np.ndarray, rows: int, rng: np.random.Generator, spec: SynthesisSpec) -> np.ndarray:
    # (L,) sequences and (C, L) signals move along L; (C, H, W) images along H and W.
    spatial = 1 if x.ndim - 1 <= 2 else 2
    base = x[rng.integers(0, len(x), rows)]
    offsets = rng.integers(-spec.shift_pixels, spec.shift_pixels + 1, (rows, spatial))
    out = np.empty_like(base)
    # One vectorised move per distinct offset (at most (2k+1)^2 of them), not per row.
    for offset in np.unique(offsets, axis=0):
        chosen = np.all(offsets == offset, axis=1)
        out[chosen] = _shift_block(base[chosen], tuple(int(o) for o in offset))
    return out


class Generator(Protocol):
    """A learned generator of inputs (the cross-domain VAE's target decoder)."""

    def generate(self, x: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray: ...


METHODS = ("mixup", "noise", "shift", "vae")


def synthesize(
    x: np.ndarray, spec: SynthesisSpec, generator: Generator | None = None
) -> np.ndarray:
    """`spec.size` new inputs shaped like the rows of x (float32), in chunks. "vae" decodes
    samples near the rows of x with `generator` (a trained cross-domain VAE mapping)."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown synthesis method {spec.method!r}; choose from {METHODS}")
    if len(x) == 0:
        raise ValueError("cannot synthesize a transfer set from no rows")
    if spec.method == "vae" and generator is None:
        raise ValueError("'vae' synthesis needs a trained VAE (a cross-domain VAE mapping)")
    x = np.asarray(x, dtype=np.float32)
    make: Callable[..., np.ndarray]
    if spec.method == "vae":
        assert generator is not None
        make = lambda x, rows, rng, _spec: generator.generate(x, rows, rng)  # noqa: E731
    else:
        make = {"mixup": _mixup, "shift": _shift}.get(spec.method) or _noise_factory(x)
    rng = np.random.default_rng([spec.seed, METHODS.index(spec.method)])
    out = np.empty((spec.size, *x.shape[1:]), dtype=np.float32)
    for start in range(0, spec.size, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, spec.size - start)
        out[start : start + rows] = make(x, rows, rng, spec)
    return out
