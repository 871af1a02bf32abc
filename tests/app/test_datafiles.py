"""Uploaded datasets: good files parse into the canonical NPZ; hostile ones are refused."""

from __future__ import annotations

import csv
import io
import pickle
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib import format as npy_format
from sklearn.datasets import load_digits

from app.datasets.parsers import DatasetRejected, ParsedDataset, load_arrays, parse_dataset


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _npy_bytes(header: dict[str, Any], data: bytes) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=9) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _parse(path: Path, label_column: str | None = None) -> ParsedDataset:
    return parse_dataset(path, path.name, path.parent / f"out-{path.stem}", label_column)


def _rejected(path: Path, label_column: str | None = None) -> DatasetRejected:
    with pytest.raises(DatasetRejected) as info:
        _parse(path, label_column)
    assert str(info.value) == info.value.message
    return info.value


# ---- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (64,)])
def test_digits_npz(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray], shape: tuple) -> None:
    images, target = digits
    x = images.reshape(len(images), *shape)
    parsed = _parse(_npz(tmp_path / "digits.npz", x=x, y=target))
    assert parsed.format == "npz"
    assert parsed.rows == 1797
    assert parsed.feature_shape == shape
    assert parsed.labeled and parsed.num_classes == 10
    assert parsed.class_counts == {
        int(k): int(v) for k, v in zip(*np.unique(target, return_counts=True), strict=True)
    }
    x2, y2 = load_arrays(parsed.canonical_path)
    assert x2.dtype == np.float32 and x2.shape == (1797, *shape)
    assert y2 is not None and y2.dtype == np.int64
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, target)
    with zipfile.ZipFile(parsed.canonical_path) as archive:
        assert sorted(archive.namelist()) == ["x.npy", "y.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())


def test_compressed_npz_float64_and_integral_float_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez_compressed(
        path, x=np.arange(12, dtype=np.float64).reshape(6, 2), y=np.array([0.0, 1, 2, 0, 1, 2])
    )
    parsed = _parse(path)
    assert (parsed.rows, parsed.feature_shape, parsed.num_classes) == (6, (2,), 3)
    x, y = load_arrays(parsed.canonical_path)
    assert x.dtype == np.float32 and y is not None and y.tolist() == [0, 1, 2, 0, 1, 2]


def test_unlabeled_npz(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    parsed = _parse(_npz(tmp_path / "u.npz", x=digits[0][:100, None]))
    assert parsed.labeled is False
    assert parsed.num_classes is None and parsed.class_counts is None
    assert parsed.feature_shape == (1, 8, 8)
    x, y = load_arrays(parsed.canonical_path)
    assert x.shape == (100, 1, 8, 8) and y is None


def _digits_rows(digits: tuple[np.ndarray, np.ndarray], label: str) -> list[list[Any]]:
    images, target = digits
    flat = images.reshape(len(images), -1)
    header = [f"p{i}" for i in range(64)]
    return [[label, *header]] + [
        [int(t), *map(float, r)] for r, t in zip(flat, target, strict=True)
    ]


def test_digits_csv_with_default_label(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    parsed = _parse(_csv(tmp_path / "digits.csv", _digits_rows(digits, "label")))
    assert parsed.format == "csv"
    assert (parsed.rows, parsed.feature_shape, parsed.num_classes) == (1797, (64,), 10)
    x, y = load_arrays(parsed.canonical_path)
    np.testing.assert_allclose(x, digits[0].reshape(1797, 64))
    assert y is not None and y.tolist() == digits[1].tolist()


def test_csv_custom_label_column(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    path = _csv(tmp_path / "t.csv", _digits_rows(digits, "target"))
    assert _parse(path).labeled is False  # no `label` column: every column is a feature
    parsed = _parse(path, label_column="target")
    assert parsed.labeled and parsed.feature_shape == (64,) and parsed.num_classes == 10


def test_csv_missing_label_column(tmp_path: Path) -> None:
    error = _rejected(_csv(tmp_path / "t.csv", [["a", "b"], [1, 2]]), label_column="target")
    assert error.field == "label_column"
    assert "'target'" in error.message and "['a', 'b']" in error.message


def test_csv_detected_by_content(tmp_path: Path) -> None:
    path = _csv(tmp_path / "upload", [["a", "label"], [1.5, 0], [2.5, 1]])
    parsed = parse_dataset(path, "upload", tmp_path / "out")
    assert parsed.format == "csv" and parsed.num_classes == 2


# ---- refused -------------------------------------------------------------------------------


class _Touch:
    """Unpickling this would create a file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    x = np.empty((2, 1), dtype=object)
    x[0, 0] = _Touch(marker)
    x[1, 0] = 1
    path = tmp_path / "obj.npz"
    np.savez(path, x=x, allow_pickle=True)
    assert pickle.dumps(_Touch(marker))  # the payload pickles, so the test means something
    error = _rejected(path)
    assert error.field == "file" and "object arrays are refused" in error.message
    assert not marker.exists()


def test_header_claiming_huge_shape_on_tiny_file(tmp_path: Path) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**6)}
    path = _zip(tmp_path / "huge.npz", {"x.npy": _npy_bytes(header, bytes(16))})
    assert "truncated or its header is wrong" in _rejected(path).message


def test_truncated_member_data(tmp_path: Path) -> None:
    header = {"descr": "<f4", "fortran_order": False, "shape": (100, 8)}
    path = _zip(tmp_path / "short.npz", {"x.npy": _npy_bytes(header, bytes(10 * 8 * 4))})
    assert "truncated" in _rejected(path).message


def test_truncated_file(tmp_path: Path) -> None:
    good = _npz(tmp_path / "good.npz", x=np.ones((50, 4)), y=np.zeros(50, dtype=np.int64))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert _rejected(cut).field == "file"


def test_zip_bomb(tmp_path: Path) -> None:
    header = {"descr": "<f4", "fortran_order": False, "shape": (5_000_000, 1)}
    member = _npy_bytes(header, bytes(20_000_000))
    path = _zip(tmp_path / "bomb.npz", {"x.npy": member}, compression=zipfile.ZIP_DEFLATED)
    assert "zip bomb" in _rejected(path).message


@pytest.mark.parametrize("name", ["garbage.bin", "garbage.npz", "garbage.csv"])
def test_binary_garbage(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    assert _rejected(path).field == "file"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert "empty" in _rejected(path).message


def test_nan_is_refused_with_count(tmp_path: Path) -> None:
    x = np.ones((10, 3), dtype=np.float32)
    x[1, 1] = x[2, 2] = np.nan
    x[3, 0] = np.inf
    assert "3 NaN or infinite" in _rejected(_npz(tmp_path / "nan.npz", x=x)).message


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (np.array([0, 1, -1, 2]), "negative"),
        (np.array([0.0, 1.5, 2.0, 1.0]), "non-integer"),
        (np.array([0, 1, 2]), "shaped [4]"),
        (np.array(["a", "b", "c", "d"]), "only real numbers"),
        (np.array([0, 1, 2, 10**12]), "at most"),
    ],
)
def test_bad_labels(tmp_path: Path, y: np.ndarray, expected: str) -> None:
    error = _rejected(_npz(tmp_path / "bad.npz", x=np.ones((4, 2)), y=y))
    assert expected in error.message


def test_empty_dataset(tmp_path: Path) -> None:
    assert "the dataset is empty" in _rejected(_npz(tmp_path / "e.npz", x=np.ones((0, 3)))).message
    path = _csv(tmp_path / "e.csv", [["a", "label"]])
    assert "the dataset is empty" in _rejected(path).message


def test_extra_member(tmp_path: Path) -> None:
    path = _npz(tmp_path / "extra.npz", x=np.ones((3, 2)), y=np.zeros(3), meta=np.ones(1))
    assert "['meta']" in _rejected(path).message


def test_missing_x_and_rank_one_x(tmp_path: Path) -> None:
    assert "no `x`" in _rejected(_npz(tmp_path / "nox.npz", y=np.zeros(3))).message
    assert "at least 2" in _rejected(_npz(tmp_path / "flat.npz", x=np.ones(3))).message


def test_ragged_csv(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", [["a", "b", "label"], [1, 2, 0], [1, 2], [3, 4, 1]])
    assert "row 3" in _rejected(path).message


def test_non_numeric_cell(tmp_path: Path) -> None:
    path = _csv(tmp_path / "n.csv", [["a", "b", "label"], [1, 2, 0], [1, "oops", 1]])
    message = _rejected(path).message
    assert "row 3" in message and "'b'" in message and "oops" in message


def test_non_integer_csv_label(tmp_path: Path) -> None:
    path = _csv(tmp_path / "l.csv", [["a", "label"], [1, 0], [2, 0], [3, "1.5"]])
    message = _rejected(path).message
    assert "row 4" in message and "1.5" in message


def test_mangled_archives_only_raise_dataset_rejected(tmp_path: Path) -> None:
    good = _npz(tmp_path / "good.npz", x=np.ones((20, 3)), y=np.arange(20) % 3).read_bytes()
    rng = random.Random(1)
    for i in range(60):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"m{i}.npz"
        path.write_bytes(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
        try:
            parsed = _parse(path)
        except DatasetRejected:
            continue
        x, _ = load_arrays(parsed.canonical_path)
        assert x.shape[0] == parsed.rows


def test_lying_zip_directory_is_refused_before_allocation(tmp_path: Path) -> None:
    data = bytearray(_npz(tmp_path / "ok.npz", x=np.ones((5, 2))).read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the central directory entry of the only member
    struct.pack_into("<II", data, entry + 20, 10**9, 10**9)  # compressed, uncompressed size
    path = tmp_path / "lie.npz"
    path.write_bytes(bytes(data))
    assert "truncated or corrupt" in _rejected(path).message


def test_values_beyond_float32_are_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path / "big.npz", x=np.full((3, 2), 1e300))
    assert "6 values too large for float32" in _rejected(path).message
