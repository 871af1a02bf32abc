"""Parquet tables and zips of class folders of images, parsed without trusting the upload."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.datasets.parsers import DatasetRejected, load_arrays, parse_dataset


def _png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_parquet_table(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0], "target": [2, 0, 1]})
    pq.write_table(table, tmp_path / "t.parquet")
    parsed = parse_dataset(tmp_path / "t.parquet", "t.parquet", tmp_path / "out", "target")
    assert (parsed.format, parsed.rows, parsed.feature_shape, parsed.num_classes) == (
        "parquet",
        3,
        (2,),
        3,
    )
    x, y = load_arrays(parsed.canonical_path)
    assert x.tolist() == [[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]] and y is not None
    assert y.tolist() == [2, 0, 1]
    with pytest.raises(DatasetRejected) as missing:
        parse_dataset(tmp_path / "t.parquet", "t.parquet", tmp_path / "o2", "klass")
    assert missing.value.field == "label_column"
    pq.write_table(pa.table({"a": ["x", "y"], "label": [0, 1]}), tmp_path / "s.parquet")
    with pytest.raises(DatasetRejected, match="numbers"):
        parse_dataset(tmp_path / "s.parquet", "s.parquet", tmp_path / "o3")
    pq.write_table(pa.table({"a": [1.0, None], "label": [0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(DatasetRejected, match="null"):
        parse_dataset(tmp_path / "n.parquet", "n.parquet", tmp_path / "o4")


def test_image_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    members = {
        f"{c}/{i}.png": _png(rng.integers(0, 255, (10, 12)))
        for c in ("cat", "dog")
        for i in range(3)
    }
    members["dog/extra.jpg"] = _png(rng.integers(0, 255, (20, 20)))
    path = _zip(tmp_path / "pets.zip", members)
    with pytest.raises(DatasetRejected) as sizes:
        parse_dataset(path, "pets.zip", tmp_path / "o1")
    assert "image_size" in sizes.value.message
    parsed = parse_dataset(path, "pets.zip", tmp_path / "o2", image_size="8x6")
    assert (parsed.format, parsed.rows, parsed.feature_shape) == ("images", 7, (1, 6, 8))
    assert parsed.class_names == ["cat", "dog"] and parsed.class_counts == {0: 3, 1: 4}
    x, _ = load_arrays(parsed.canonical_path)
    assert 0.0 <= x.min() and x.max() <= 1.0
    rgb = parse_dataset(path, "pets.zip", tmp_path / "o3", image_size="4", image_mode="RGB")
    assert rgb.feature_shape == (3, 4, 4)


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"a.png": b"x"}, "class folder"),
        ({"cat/a.png": b"not an image at all"}, "not a readable PNG or JPEG image"),
        ({"cat/a.png": b"", "cat/readme.txt": b"hi"}, "not a PNG"),
        ({"../../etc/cat/a.png": b""}, "class folder"),
    ],
)
def test_bad_image_archives(tmp_path: Path, members: dict[str, bytes], words: str) -> None:
    path = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(DatasetRejected, match=words):
        parse_dataset(path, "bad.zip", tmp_path / "out", image_size="8x8")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # 10,000 x 10,000 pixels of one colour: a few KB as PNG, 100 M pixels decoded.
    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buffer, format="PNG")
    path = _zip(tmp_path / "bomb.zip", {"cat/bomb.png": buffer.getvalue()})
    with pytest.raises(DatasetRejected, match="bomb|unpacks"):
        parse_dataset(path, "bomb.zip", tmp_path / "out", image_size="8x8")
    with pytest.raises(DatasetRejected) as bad_size:
        parse_dataset(path, "bomb.zip", tmp_path / "out2", image_size="huge")
    assert bad_size.value.field == "image_size"
