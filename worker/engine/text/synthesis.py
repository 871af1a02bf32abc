"""Text transfer sets in the spirit of Tang et al. (1903.12136), made on token rows (N, 2, L):

- `mask`: each token (not a special one) becomes the mask token with probability 0.1;
- `swap`: each token becomes, with probability 0.1, a token seen elsewhere in the data
  (drawn by frequency, as Tang's POS-guided swap draws words of the same kind);
- `ngram`: a window of 1 to 5 tokens of the row, the rest dropped (with probability 0.25,
  else the row unchanged but for `mask`).

The teacher labels them once; deterministic for a seed."""

from __future__ import annotations

import numpy as np

from worker.engine.text.tokens import SpecialTokens

TEXT_METHODS = ("mask", "ngram", "swap")
MASK_P = 0.1
SWAP_P = 0.1
NGRAM_P = 0.25
NGRAM_MAX = 5


def _ordinary(ids: np.ndarray, mask: np.ndarray, special: SpecialTokens) -> np.ndarray:
    ordinary = mask > 0
    for token in special.ids:
        ordinary &= ids != token
    return ordinary


def _mask(
    ids: np.ndarray, ordinary: np.ndarray, rng: np.random.Generator, special: SpecialTokens
) -> None:
    replacement = special.mask if special.mask is not None else special.unk
    if replacement is None:
        return
    chosen = ordinary & (rng.random(ids.shape) < MASK_P)
    ids[chosen] = replacement


def _swap(
    ids: np.ndarray, ordinary: np.ndarray, rng: np.random.Generator, pool: np.ndarray
) -> None:
    if len(pool) == 0:
        return
    chosen = ordinary & (rng.random(ids.shape) < SWAP_P)
    ids[chosen] = pool[rng.integers(0, len(pool), int(chosen.sum()))]


def _ngram(
    ids: np.ndarray,
    mask: np.ndarray,
    ordinary: np.ndarray,
    rng: np.random.Generator,
    special: SpecialTokens,
) -> None:
    """Keep one window of each chosen row's ordinary tokens (between its special tokens)."""
    for row in np.flatnonzero(rng.random(len(ids)) < NGRAM_P):
        positions = np.flatnonzero(ordinary[row])
        if len(positions) < 2:
            continue
        size = int(rng.integers(1, min(NGRAM_MAX, len(positions)) + 1))
        start = int(rng.integers(0, len(positions) - size + 1))
        keep = positions[start : start + size]
        tokens = ids[row, keep].copy()
        ids[row] = special.pad
        mask[row] = 0.0
        head = [special.cls] if special.cls is not None else []
        tail = [special.sep] if special.sep is not None else []
        new = np.array(head + tokens.tolist() + tail, dtype=ids.dtype)[: ids.shape[1]]
        ids[row, : len(new)] = new
        mask[row, : len(new)] = 1.0


def synthesize_text(
    x: np.ndarray, method: str, size: int, seed: int, special: SpecialTokens
) -> np.ndarray:
    """`size` new rows made from the rows of x (token rows) by `method`."""
    if method not in TEXT_METHODS:
        raise ValueError(f"no text synthesis named {method!r}")
    rng = np.random.default_rng(seed)
    base = x[rng.integers(0, len(x), size)].copy()
    ids, mask = base[:, 0], base[:, 1]
    ordinary = _ordinary(ids, mask, special)
    if method == "mask":
        _mask(ids, ordinary, rng, special)
    elif method == "swap":
        seen = x[:, 0][_ordinary(x[:, 0], x[:, 1], special)]
        _swap(ids, ordinary, rng, seen.astype(np.float32))
    else:
        _ngram(ids, mask, ordinary, rng, special)
    return base
