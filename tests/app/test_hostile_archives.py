"""Archives and arrays built to hurt: refused by what is actually read, before allocating."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.datasets.parsers import DatasetRejected, load_arrays, parse_dataset


def _png(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 7).save(buffer, format=fmt)
    return buffer.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _refused(path: Path, **form: str) -> DatasetRejected:
    with pytest.raises(DatasetRejected) as info:
        parse_dataset(path, path.name, path.parent / f"out-{path.stem}", **form)
    return info.value


@pytest.mark.parametrize("name", ["../cat/a.png", "/etc/a.png", "cat\\..\\a.png", "C:/a.png"])
def test_zip_slip_names_are_refused(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "slip.zip", {"dog/ok.png": _png(4, 4), name: _png(4, 4)})
    error = _refused(path, image_size="4x4")
    assert error.field == "file" and "unsafe path" in error.message


def test_other_image_formats_named_png_are_not_decoded(tmp_path: Path) -> None:
    path = _zip(tmp_path / "gif.zip", {"cat/a.png": _png(4, 4, "GIF"), "dog/b.png": _png(4, 4)})
    assert "not a readable PNG or JPEG" in _refused(path).message


def test_pixel_budget_is_checked_before_decoding(tmp_path: Path) -> None:
    # 6,000 x 6,000: under Pillow's own default limit, over Distillery's budget.
    path = _zip(tmp_path / "big.zip", {"cat/a.png": _png(6_000, 6_000)})
    assert "decompression bomb" in _refused(path, image_size="8x8").message


def test_tiny_images_resized_up_are_bounded(tmp_path: Path) -> None:
    members = {f"c{i % 2}/{i}.png": _png(1, 1) for i in range(40)}  # 40 x 12 MB decoded
    path = _zip(tmp_path / "up.zip", members)
    error = _refused(path, image_size="1024x1024", image_mode="RGB")
    assert "decode to more than" in error.message


def test_huge_central_directory_is_refused_before_reading_it(tmp_path: Path) -> None:
    good = tmp_path / "ok.npz"
    np.savez(good, x=np.ones((4, 2)))
    data = bytearray(good.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, end + 12, 2**31)  # the declared central directory size
    path = tmp_path / "cd.npz"
    path.write_bytes(bytes(data))
    assert "central directory" in _refused(path).message


def test_short_declared_size_is_caught_by_the_bytes_read(tmp_path: Path) -> None:
    good = tmp_path / "ok.npz"
    np.savez(good, x=np.ones((64, 4), np.float32))
    data = bytearray(good.read_bytes())
    for signature, size_at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.find(signature)
        struct.pack_into("<I", data, at + size_at, 100)  # claims 100 bytes uncompressed
    path = tmp_path / "short.npz"
    path.write_bytes(bytes(data))
    assert _refused(path).field == "file"


@pytest.mark.parametrize("shape", [(-2, -3), (3, -1)])
def test_negative_dimensions_are_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    member = b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little") + header + b"\n"
    path = _zip(tmp_path / "neg.npz", {"x.npy": member + bytes(24)})
    assert "impossible shape" in _refused(path).message


def test_fortran_order_and_big_endian_arrays_are_read(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(24, dtype=">f8").reshape(6, 4))
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(6, dtype=">i4") % 2)
    parsed = parse_dataset(tmp_path / "f.npz", "f.npz", tmp_path / "out")
    x2, y2 = load_arrays(parsed.canonical_path)
    np.testing.assert_array_equal(x2, x)
    assert y2 is not None and y2.tolist() == [0, 1, 0, 1, 0, 1]


def test_parquet_claiming_too_many_rows_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    zeros = pa.array(np.zeros(10_000_000))  # run-length encoded: a few KB for 160 MB decoded
    pq.write_table(
        pa.table({"a": zeros, "label": pa.array(np.zeros(10_000_000, int))}),
        tmp_path / "long.parquet",
    )
    assert (tmp_path / "long.parquet").stat().st_size < 128 * 1024
    assert "upload the table in parts" in _refused(tmp_path / "long.parquet").message
