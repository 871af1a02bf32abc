"""A Fortran-order .npy array rewritten in C order on disk, a tile at a time.

pandas and np.asfortranarray make Fortran-order arrays, where a row's values lie `rows` apart.
Mapping such a file and reading it row by row touches every page of it (and a page read through
a mapping stays in the process's resident memory while the mapping lives), so the rows are
gathered instead with plain reads, in tiles of about TILE_BYTES, and written out in C order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

TILE_BYTES = 4 * 1024 * 1024


def to_c_order(
    source: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], out: Path
) -> None:
    """Write the Fortran-order array at `offset` in `source` to `out` as rows in C order of
    their *Fortran* feature index (2-D arrays: plain C order; see `c_rows` for more dims)."""
    rows, features, item = shape[0], math.prod(shape[1:]), dtype.itemsize
    side = max(1, math.isqrt(TILE_BYTES // item))
    tile_rows = rows if rows <= side else side
    tile_features = max(1, TILE_BYTES // (item * max(1, tile_rows)))
    with source.open("rb") as fin, out.open("wb") as fout:
        fout.truncate(rows * features * item)
        for r0 in range(0, rows, tile_rows):
            r1 = min(rows, r0 + tile_rows)
            for k0 in range(0, features, tile_features):
                k1 = min(features, k0 + tile_features)
                tile = _read_tile(fin, offset, dtype, rows, (r0, r1), (k0, k1))
                _write_tile(fout, tile.T, features, r0, k0)


def _read_tile(
    fh: IO[bytes], offset: int, dtype: np.dtype, rows: int, r: tuple[int, int], k: tuple[int, int]
) -> np.ndarray:
    """Values of features k[0]..k[1] for rows r[0]..r[1]: (features, rows)."""
    item = dtype.itemsize
    if r == (0, rows):  # whole columns lie next to each other: one read
        fh.seek(offset + k[0] * rows * item)
        flat = np.fromfile(fh, dtype=dtype, count=(k[1] - k[0]) * rows)
        return flat.reshape(k[1] - k[0], rows)
    tile = np.empty((k[1] - k[0], r[1] - r[0]), dtype=dtype)
    for i, feature in enumerate(range(*k)):
        fh.seek(offset + (feature * rows + r[0]) * item)
        tile[i] = np.fromfile(fh, dtype=dtype, count=r[1] - r[0])
    return tile


def _write_tile(fh: IO[bytes], block: np.ndarray, features: int, r0: int, k0: int) -> None:
    item = block.dtype.itemsize
    if block.shape[1] == features:
        fh.seek(r0 * features * item)
        fh.write(np.ascontiguousarray(block).tobytes())
        return
    for i, row in enumerate(block):
        fh.seek(((r0 + i) * features + k0) * item)
        fh.write(np.ascontiguousarray(row).tobytes())


def c_rows(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Rows of a file written by `to_c_order`, each put in C order of its dimensions (one row
    at a time: a row has at most max_dataset_features values)."""
    dims = shape[1:]
    features = math.prod(dims)
    with path.open("rb") as fh:
        for _ in range(shape[0]):
            row = np.fromfile(fh, dtype=dtype, count=features)
            if len(row) != features:
                raise ValueError("the array data is truncated")
            yield row.reshape(dims[::-1]).transpose().reshape(-1)
