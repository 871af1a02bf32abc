"""The parsers' bounds, one at a time: each refusal names its limit, and the machinery that
keeps memory bounded (tiles, chunks, page walks, directory counts) gives the same answers as
reading everything at once would."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.datasets.parsers import DatasetRejected, fortran, load_arrays, parse_dataset
from app.datasets.parsers import labels as labelfiles
from app.datasets.parsers.limits import DatasetLimits
from app.datasets.parsers.parquet_pages import PagesRejected, column_costs, read_page_header
from app.datasets.parsers.zipdirectory import read_directory


def _refused(path: Path, limits: DatasetLimits | None = None, **form: str) -> DatasetRejected:
    with pytest.raises(DatasetRejected) as caught:
        parse_dataset(path, path.name, path.parent / "out", limits=limits, **form)
    return caught.value


@pytest.mark.parametrize("shape", [(3000, 700), (50, 3, 7, 5), (2, 40_000)])
def test_fortran_arrays_are_transposed_in_tiles(
    tmp_path: Path, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fortran, "TILE_BYTES", 64 * 1024)  # many tiles, both layouts of them
    x = np.asfortranarray(np.random.default_rng(0).random(shape))
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(shape[0]) % 3)
    parsed = parse_dataset(tmp_path / "f.npz", "f.npz", tmp_path / "out")
    got, y = load_arrays(parsed.canonical_path)
    np.testing.assert_array_equal(got, x.astype(np.float32))
    assert y is not None
    values, counts = np.unique(y, return_counts=True)
    assert parsed.class_counts == dict(zip(values.tolist(), counts.tolist(), strict=True))


def test_labels_are_counted_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(labelfiles, "_CHUNK_VALUES", 1000)
    y = np.random.default_rng(0).integers(0, 7, 25_000)
    y[-1] = 40  # a class that first appears in the last chunk
    np.savez(tmp_path / "l.npz", x=np.zeros((len(y), 1), np.uint8), y=y.astype(np.float64))
    parsed = parse_dataset(tmp_path / "l.npz", "l.npz", tmp_path / "out")
    values, counts = np.unique(y, return_counts=True)
    assert parsed.class_counts == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert parsed.num_classes == 41
    _, stored = load_arrays(parsed.canonical_path)
    assert stored is not None and stored.dtype == np.int64 and (stored == y).all()


@pytest.mark.parametrize(
    ("text", "limits", "words"),
    [
        (
            b"a,b,label\n" + b"1," * 600 + b"0\n",
            DatasetLimits(max_csv_line_bytes=1024),
            "longer than 1,024",
        ),
        (
            b",".join(b"c%d" % i for i in range(30)) + b"\n1\n",
            DatasetLimits(max_table_columns=20),
            "more than 20 columns",
        ),
        (b"a,label\n1,2,3,4,5,6,7,0\n", DatasetLimits(), "row 2 has more cells"),
        (b'a,label\n"' + b"x\n" * 700 + b'",0\n', DatasetLimits(max_csv_line_bytes=1024), "row 2"),
        (
            b"a,b,c,label\n1,2,3,0\n",
            DatasetLimits(max_features=2),
            "DISTILLERY_MAX_DATASET_FEATURES",
        ),
    ],
)
def test_csv_records_are_bounded_before_they_are_split(
    tmp_path: Path, text: bytes, limits: DatasetLimits, words: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    error = _refused(path, limits)
    assert error.field == "file" and words in error.message, error.message


def test_commas_inside_quoted_texts_are_not_cells(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    texts = ["the soup, the bread, and the wine were good", 'it said "fine, fine", twice']
    rows = "".join('"' + t.replace('"', '""') + '",food\n' for t in texts)
    path.write_text("text,label\n" + rows + '"a line, and\nanother, line",film\n')
    parsed = parse_dataset(path, path.name, tmp_path / "out")
    assert parsed.rows == 3 and parsed.class_counts == {"food": 2, "film": 1}
    path.write_text('text,label\n"one, two",food,extra,cells\n')
    assert "row 2 has more cells" in _refused(path).message


def test_csv_rows_stream_within_the_decoded_budget(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b,label\n" + b"1,2,0\n" * 700_000)  # 5.6 MB as float32
    limits = DatasetLimits(max_decoded_bytes=4 * 1024 * 1024)
    assert "DISTILLERY_MAX_DECODED_BYTES" in _refused(path, limits).message
    parsed = parse_dataset(path, path.name, tmp_path / "ok")
    assert parsed.rows == 700_000 and parsed.class_counts == {0: 700_000}


def _zip(path: Path, count: int, comment: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"c/{i}.png", b"")
        archive.comment = comment
    return path


@pytest.mark.parametrize(("count", "comment"), [(50, b""), (50, b"hello" * 100), (65_600, b"")])
def test_zip_directory_is_found_and_counted_as_zipfile_reads_it(
    tmp_path: Path, count: int, comment: bytes
) -> None:
    """65,600 entries: past 65,535 the archive needs its zip64 end records."""
    path = _zip(tmp_path / "z.zip", count, comment)
    found = read_directory(path, 1 << 24)
    assert found is not None and found.entries == count
    with zipfile.ZipFile(path) as archive:
        assert found.size == sum(46 + len(i.filename) + len(i.extra) for i in archive.infolist())
    assert read_directory(path, 10) == type(found)(found.size, 0)  # over the cap: not read


def test_zip_members_are_counted_before_zipfile_reads_them(tmp_path: Path) -> None:
    path = _zip(tmp_path / "z.zip", 30)
    error = _refused(path, DatasetLimits(max_images=29), image_size="4x4")
    assert "DISTILLERY_MAX_IMAGES" in error.message and "30" in error.message


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not out[-1] & 0x80:
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def test_page_headers_are_parsed_and_lies_are_seen() -> None:
    # PageHeader{1: type=0, 2: uncompressed, 3: compressed, 5: DataPageHeader{1: 10, 2: 0}}
    def header(uncompressed: int, compressed: int) -> bytes:
        return (
            b"\x15"
            + _zigzag(0)
            + b"\x15"
            + _zigzag(uncompressed)
            + b"\x15"
            + _zigzag(compressed)
            + b"\x2c"
            + b"\x15"
            + _zigzag(10)
            + b"\x15"
            + _zigzag(0)
            + b"\x00"
            + b"\x00"
        )

    page = read_page_header(io.BytesIO(header(2**31 - 1, 64)), 0)
    assert (page.uncompressed, page.compressed) == (2**31 - 1, 64)
    assert page.header_bytes == len(header(2**31 - 1, 64))
    for broken in (
        b"\x15\x00",
        b"\x15" + _zigzag(-5) + b"\x15" + _zigzag(-5) + b"\x00",
        b"\x1f\x00",
    ):
        with pytest.raises(PagesRejected):
            read_page_header(io.BytesIO(broken), 0)


def test_page_walk_covers_each_column_chunk_exactly(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    table = pa.table(
        {"a": rng.random(300_000), "b": rng.integers(0, 3, 300_000), "c": np.zeros(300_000)}
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=100_000)
    metadata = pq.ParquetFile(tmp_path / "t.parquet").metadata
    size = (tmp_path / "t.parquet").stat().st_size
    with (tmp_path / "t.parquet").open("rb") as fh:
        costs = column_costs(fh, metadata, size, 10_000, [8.125, 8.125, 8.125])
    assert all(cost > 100_000 * 8 for cost in costs)  # at least the decoded chunk
    parsed = parse_dataset(tmp_path / "t.parquet", "t.parquet", tmp_path / "o")
    got, _ = load_arrays(parsed.canonical_path)
    want = np.column_stack([table[n].to_numpy() for n in ("a", "b", "c")]).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_a_row_group_column_too_large_to_decode_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 3_300_000  # 26.8 MB decoded in one row group: over the 24 MiB a group may take
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"a": np.zeros(rows)}), path, row_group_size=rows, compression="zstd")
    assert path.stat().st_size < 1024 * 1024
    assert "row_group_size" in _refused(path).message
    pq.write_table(pa.table({"a": np.zeros(rows)}), path, row_group_size=1_000_000)
    assert parse_dataset(path, path.name, tmp_path / "ok").rows == rows


def test_a_parquet_footer_too_large_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    path.write_bytes(b"PAR1" + bytes(64) + struct.pack("<I", 9 * 1024 * 1024) + b"PAR1")
    assert "metadata takes" in _refused(path).message
