"""The API's memory while it parses the worst upload of each format: at most 100 MB of growth.

The uploads here are at most 64 MiB (the test API's DISTILLERY_MAX_UPLOAD_BYTES), not the
default 2 GiB, and the bound still holds for any upload up to the limit, because no parser holds
more of an upload at once than a bound that does not grow with it (README, "Security"):

- CSV: one record, at most DISTILLERY_MAX_CSV_LINE_BYTES characters and, before csv splits it,
  at most DISTILLERY_MAX_TABLE_COLUMNS cells; rows are flushed to disk every 4 MB.
- NPZ: members are unpacked to disk 4 MB at a time; values are converted a million at a time
  (a row has at most DISTILLERY_MAX_DATASET_FEATURES); Fortran-order arrays are transposed in
  4 MB tiles; labels are checked and counted from disk half a million at a time.
- zip archives: the directory is at most 128 bytes for each of DISTILLERY_MAX_IMAGES members,
  counted before zipfile reads it.
- Parquet: the footer is at most 8 MiB; pyarrow reads groups of columns whose row-group chunks
  decode to at most 24 MiB (their page headers are read first).
- images: one image at a time, streamed to Pillow, at most DISTILLERY_MAX_IMAGE_PIXELS decoded,
  converted and reduced in strips.
- text (CSV, JSONL): records bounded as CSV's, texts at most 100,000 characters, written to
  the canonical Parquet file every 4 Mi characters.

So each case below sits at one of those bounds, where a bigger upload only adds more chunks
of the same size (time, not memory); the first case is the issue's: one line of 60 MB.
Memory is the API process's resident set, sampled every 10 ms, over its level just before the
upload (after a first upload of every format, so that imports are not counted)."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from tests.app.live import extra_api
from tests.support import Service

LIMIT = 64 * 1024 * 1024
MAX_GROWTH_MB = 100.0


class PeakRss:
    """The peak resident memory of a process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _png(width: int, height: int, mode: str = "RGBA") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(path: Path, members: Iterator[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def _parquet(path: Path, columns: dict[str, np.ndarray], **options: Any) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: pa.array(v) for k, v in columns.items()}), path, **options)
    return path


def long_line(path: Path) -> Path:  # the case: ~60 MB of "1," on one line
    with path.open("wb") as fh:
        fh.write(b"a,label\n" + b"1," * (30 * 1024 * 1024) + b"1\n")
    return path


def widest_csv_rows(path: Path) -> Path:  # rows of 99,999 features, each parsed whole
    cells = 99_999
    with path.open("wb") as fh:
        fh.write(",".join(f"c{i}" for i in range(cells)).encode() + b",label\n")
        for i in range(40):
            fh.write(b"1.25," * cells + str(i % 2).encode() + b"\n")
    return path


def widest_npz_row(path: Path) -> Path:  # 2 rows of 3 Mi float64 values (48 MB)
    np.savez(path, x=np.random.default_rng(0).random((2, 3 * 1024 * 1024)), y=np.arange(2))
    return path


def fortran_npz(path: Path) -> Path:  # 48 MB as pandas leaves it: Fortran order
    x = np.asfortranarray(np.random.default_rng(0).random((2000, 3000)))
    np.savez(path, x=x, y=np.arange(2000) % 3)
    return path


def most_labels(path: Path) -> Path:  # 8 Mi labels: 64 MB as int64, never held
    rows = 8 * 1024 * 1024
    np.savez(path, x=np.zeros((rows, 1), np.uint8), y=(np.arange(rows) % 7).astype(np.int8))
    return path


def largest_parquet_chunk(path: Path) -> Path:  # a row group whose column decodes to 24 MB
    rows = 3_000_000
    columns = {"a": np.zeros(rows), "label": np.zeros(rows, np.int8)}
    return _parquet(path, columns, row_group_size=rows, compression="zstd")


def wide_parquet(path: Path) -> Path:  # 3,000 columns: many column groups and a big footer
    rng = np.random.default_rng(0)
    columns = {f"c{i}": rng.random(2000) for i in range(3000)}
    return _parquet(path, {**columns, "label": np.arange(2000) % 2})


def largest_images(path: Path) -> Path:  # two 8 Mi-pixel RGBA PNGs (32 MB decoded each)
    image = _png(4096, 2048)
    return _zip(path, iter([("a/1.png", image), ("b/2.png", image)]))


def most_images(path: Path) -> Path:  # 60,000 members with 128-byte directory entries
    tiny = _png(1, 1, "L")
    return _zip(path, ((f"c{i % 2}/{i:075d}.png", tiny) for i in range(60_000)))


def longest_texts(path: Path) -> Path:  # 600 texts of 99,000 characters (60 MB), each kept
    with path.open("w", encoding="utf-8") as fh:
        fh.write("text,label\n")
        for i in range(600):
            fh.write("word " * 19_800 + f",c{i % 3}\n")
    return path


def jsonl_texts(path: Path) -> Path:  # the same texts as JSON lines
    import json

    with path.open("w", encoding="utf-8") as fh:
        for i in range(600):
            fh.write(json.dumps({"text": "word " * 19_800, "label": i % 3}) + "\n")
    return path


CASES: list[tuple[Callable[[Path], Path], str, dict[str, str], int]] = [
    (long_line, "long.csv", {}, 422),
    (widest_csv_rows, "wide.csv", {}, 201),
    (widest_npz_row, "row.npz", {}, 201),
    (fortran_npz, "fortran.npz", {}, 201),
    (most_labels, "labels.npz", {}, 201),
    (largest_parquet_chunk, "chunk.parquet", {}, 201),
    (wide_parquet, "wide.parquet", {}, 201),
    (largest_images, "big.zip", {"image_size": "1024x1024", "image_mode": "RGB"}, 201),
    (most_images, "many.zip", {"image_size": "1x1"}, 201),
    (longest_texts, "texts.csv", {}, 201),
    (jsonl_texts, "texts.jsonl", {}, 201),
]


@pytest.fixture(scope="module")
def worst_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worst-uploads")
    files = {name: make(folder / name) for make, name, _, _ in CASES}
    assert all(path.stat().st_size <= LIMIT for path in files.values())
    return files


@pytest.fixture(params=["production", "embedded"])
def roomy_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    stack: Service = request.getfixturevalue(f"{request.param}_service")
    service = extra_api(stack, tmp_path, DISTILLERY_MAX_UPLOAD_BYTES=str(LIMIT))
    try:
        yield service
    finally:
        service.stop()


def _warm_up(service: Service, folder: Path) -> None:
    """One small upload of each format, so that what they import is in the baseline."""
    (folder / "w.csv").write_text("a,label\n1,0\n2,1\n")
    np.savez(folder / "w.npz", x=np.zeros((4, 2)), y=np.arange(4) % 2)
    _parquet(folder / "w.parquet", {"a": np.zeros(4), "label": np.arange(4) % 2})
    _zip(folder / "w.zip", iter([("a/1.png", _png(4, 4)), ("b/1.png", _png(4, 4))]))
    (folder / "w.jsonl").write_text('{"text": "a short text", "label": 0}\n')
    (folder / "wt.csv").write_text("text,label\na short text,a\n")
    for name in ("w.csv", "w.npz", "w.parquet", "w.zip", "w.jsonl", "wt.csv"):
        r = service.upload_dataset(folder / name, image_size="2x2")
        assert r.status_code == 201, r.text


# The parsers are the same on both stacks; what differs is where the canonical form is stored
# (SQLite or Postgres). The embedded stack runs the case and the two largest.
EMBEDDED_CASES = ("long.csv", "chunk.parquet", "big.zip")


def test_worst_upload_of_each_format_stays_within_100_mb(
    roomy_api: Service, worst_files: dict[str, Path], tmp_path: Path
) -> None:
    _warm_up(roomy_api, tmp_path)
    process = psutil.Process(roomy_api.processes[0].pid)
    baseline = process.memory_info().rss
    growth = {}
    for _, name, form, status in CASES:
        if roomy_api.env.get("DISTILLERY_DATABASE_URL") is None and name not in EMBEDDED_CASES:
            continue
        with PeakRss(process.pid) as rss:
            r = roomy_api.upload_dataset(worst_files[name], **form)
        assert r.status_code == status, (name, r.text[:500])
        if status == 422:
            problem = r.json()
            assert problem["code"] == "dataset_invalid", problem
            assert "DISTILLERY_MAX_CSV_LINE_BYTES" in problem["detail"], problem
        # Over the level before the first of them: what an allocator kept from earlier
        # uploads counts against the later ones.
        growth[name] = round((rss.peak - baseline) / 2**20, 1)
    print(f"API resident memory over its warm baseline (MB), by upload: {growth}")
    assert max(growth.values()) <= MAX_GROWTH_MB, growth
    assert roomy_api.alive()
