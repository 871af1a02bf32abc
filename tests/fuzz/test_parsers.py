"""Fuzzing every upload parser: random bytes, mutated valid files and hostile structures.

Whatever comes in, the parser accepts it or refuses it with DatasetRejected naming a request
field (the API's 422), within a time and memory bound (see conftest.py). Inputs run in a
separate, address-space-limited process, so a crash or runaway allocation cannot pass as a
refusal."""

from __future__ import annotations

import ast
import io
import warnings
import zipfile
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.fuzz.conftest import ParserProcess, assert_handled

FUZZ = settings(
    max_examples=120,
    deadline=None,  # the bound per input is asserted on the parser process's own clock
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FILENAMES = ["data.npz", "data.csv", "data.parquet", "data.zip", "data.npy", "upload"]
IMAGE_SIZES = [None, "8x8", "3", "1024x1024", "0x3", "axb", "8x8x8"]
IMAGE_MODES = ["L", "RGB", "P"]


def _npz(compressed: bool, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"a": [1.0, 2.5, 3.0, 4.0], "b": [0, 1, 0, 1], "label": [1, 0, 1, 0]})
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _image(width: int, height: int, mode: str = "L", fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = (height, width, 3) if mode == "RGB" else (height, width)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, channels).astype(np.uint8), mode).save(buffer, fmt)
    return buffer.getvalue()


def _zip(members: list[tuple[str, bytes]], deflate: bool = True) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are part of the fuzzing
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


_rng = np.random.default_rng(0)
SEEDS: dict[str, tuple[bytes, str, dict[str, Any]]] = {
    "npz": (
        _npz(False, x=_rng.random((12, 3)).astype(np.float32), y=np.arange(12) % 3),
        "data.npz",
        {},
    ),
    "npz-deflated": (
        _npz(True, x=_rng.random((6, 1, 2, 2)), y=np.arange(6.0) % 2),
        "data.npz",
        {},
    ),
    "npz-fortran": (_npz(False, x=np.asfortranarray(_rng.random((5, 4)))), "data.npz", {}),
    "csv": (b"a,b,label\n1,2,0\n3.5,-4e3,1\n5,6,1\n", "data.csv", {}),
    "csv-target": (b"\xef\xbb\xbfx,target\n1,0\n2,1\n", "data.csv", {"label_column": "target"}),
    "parquet": (_parquet(), "data.parquet", {}),
    "images": (
        _zip([(f"{c}/{i}.png", _image(6, 5, seed=i)) for c in ("cat", "dog") for i in range(2)]),
        "data.zip",
        {"image_size": "4x4"},
    ),
    "images-jpeg": (
        _zip([("a/1.jpg", _image(9, 7, "RGB", "JPEG")), ("b/2.jpeg", _image(9, 7, "RGB", "JPEG"))]),
        "data.zip",
        {"image_mode": "RGB"},
    ),
}


def _mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        at = where % (len(out) + 1)
        if kind == "set" and out:
            out[min(at, len(out) - 1)] = value
        elif kind == "insert":
            out[at:at] = bytes([value]) * (1 + value % 7)
        elif kind == "delete":
            del out[at : at + 1 + value % 16]
        elif kind == "truncate":
            del out[at:]
        elif kind == "int32" and len(out) >= 4:  # a size or offset field: the likeliest lie
            at = min(at, len(out) - 4)
            out[at : at + 4] = (value * 0x01010101 if value % 2 else 0xFFFFFFFF).to_bytes(
                4, "little"
            )
    return bytes(out)


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "truncate", "int32"]),
        st.integers(0, 2**20),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(data=st.binary(max_size=4096), filename=st.sampled_from(FILENAMES))
def test_random_bytes(parser: ParserProcess, data: bytes, filename: str) -> None:
    assert_handled(parser.parse(data, filename), f"{len(data)} random bytes as {filename}")


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), edits=EDITS)
def test_mutated_valid_files(parser: ParserProcess, seed: str, edits: list[Any]) -> None:
    data, filename, form = SEEDS[seed]
    verdict = parser.parse(_mutate(data, edits), filename, **form)
    assert_handled(verdict, f"{seed} with edits {edits}")


def test_the_seeds_are_valid(parser: ParserProcess) -> None:
    """Mutating files that do not parse in the first place would test little."""
    for name, (data, filename, form) in SEEDS.items():
        verdict = parser.parse(data, filename, **form)
        assert verdict["outcome"] == "accepted", (name, verdict)


DESCRS = [
    "<f4",
    ">f8",
    "|u1",
    "<i8",
    "|b1",
    "<f2",
    "<f16",
    "O",
    "<U4",
    "|S3",
    "|V8",
    "<c8",
    "<M8[s]",
    "(2,)<f4",
    "[('a', '<f4')]",
    "'<f4'",
    "float32",
    "",
]
DIMS = st.one_of(st.integers(0, 6), st.integers(-3, 2**62), st.just(10**30))


@st.composite
def npy_members(draw: st.DrawFn) -> bytes:
    """A .npy member with an arbitrary header, and data that may or may not match it."""
    descr = draw(st.sampled_from(DESCRS))
    shape = tuple(draw(st.lists(DIMS, max_size=4)))
    fortran = draw(st.booleans())
    header = f"{{'descr': {descr if descr.startswith(('[', chr(39))) else repr(descr)}, "
    header += f"'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    header = draw(st.sampled_from([header, header[:-3], header.replace("'shape'", "'shapes'")]))
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
    length = (len(header) + 1).to_bytes(2 if version == (1, 0) else 4, "little")
    magic = b"\x93NUMPY" + bytes(version)
    body = draw(st.binary(max_size=256))
    if draw(st.booleans()):  # data that fits the header, where it is small enough
        try:
            size = (
                int(np.prod(shape, dtype=object))
                * np.dtype(ast.literal_eval(descr) if descr[:1] in "['" else descr).itemsize
            )
            body = bytes(max(0, min(size, 4096)))
        except Exception:
            pass
    return magic + length + header.encode() + b"\n" + body


@FUZZ
@given(
    x=npy_members(),
    y=st.one_of(st.none(), npy_members()),
    extra=st.sampled_from([None, "z.npy", "../x.npy", "/abs.npy", "x.npy"]),
    deflate=st.booleans(),
)
def test_hostile_npy_headers(
    parser: ParserProcess, x: bytes, y: bytes | None, extra: str | None, deflate: bool
) -> None:
    members = [("x.npy", x)]
    if y is not None:
        members.append(("y.npy", y))
    if extra is not None:
        members.append((extra, x))
    data = _zip(members, deflate)
    assert_handled(parser.parse(data, "data.npz"), f"members {[m[0] for m in members]}")


CELLS = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "1.5",
            "nan",
            "inf",
            "-inf",
            "1e999",
            "",
            " ",
            "x",
            "0x10",
            "9" * 400,
            "1_0",
            "\u0661",
            '"',
            "a,b",
        ]
    ),
    st.floats(allow_nan=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["a", "b", "label", "target", "", "label"]), max_size=5),
    rows=st.lists(st.lists(CELLS, max_size=6), max_size=12),
    label_column=st.sampled_from([None, "label", "target", "missing"]),
    tail=st.text(max_size=64),
)
def test_csv_tables(
    parser: ParserProcess,
    header: list[str],
    rows: list[list[str]],
    label_column: str | None,
    tail: str,
) -> None:
    text = "\n".join(",".join(row) for row in [header, *rows]) + tail
    verdict = parser.parse(
        text.encode("utf-8", "surrogatepass"), "data.csv", label_column=label_column
    )
    assert_handled(verdict, repr(text[:300]))


IMAGE_NAMES = [
    "cat/a.png",
    "dog/b.jpg",
    "dog/c.jpeg",
    "a.png",
    "cat/sub/x.png",
    "../evil.png",
    "/abs/x.png",
    "c:/x.png",
    "cat\\x.png",
    "cat/.hidden.png",
    "__MACOSX/cat/a.png",
    "cat/readme.txt",
    "cat/",
]


@st.composite
def image_contents(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["png", "jpeg", "rgb", "garbage", "mutated", "other-format"]))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    if kind == "png":
        return _image(width, height)
    if kind in ("jpeg", "rgb"):
        return _image(width, height, "RGB", "JPEG" if kind == "jpeg" else "PNG")
    if kind == "other-format":  # a GIF or BMP named .png: only PNG and JPEG are decoded
        buffer = io.BytesIO()
        Image.new("L", (width, height)).save(buffer, draw(st.sampled_from(["GIF", "BMP", "TIFF"])))
        return buffer.getvalue()
    if kind == "mutated":
        return _mutate(_image(width, height), draw(EDITS))
    return draw(st.binary(max_size=512))


@FUZZ
@given(
    members=st.lists(
        st.tuples(st.sampled_from(IMAGE_NAMES), image_contents()), min_size=1, max_size=6
    ),
    image_size=st.sampled_from(IMAGE_SIZES),
    image_mode=st.sampled_from(IMAGE_MODES),
    deflate=st.booleans(),
)
def test_image_archives(
    parser: ParserProcess,
    members: list[tuple[str, bytes]],
    image_size: str | None,
    image_mode: str,
    deflate: bool,
) -> None:
    data = _zip(members, deflate)
    verdict = parser.parse(data, "images.zip", image_size=image_size, image_mode=image_mode)
    assert_handled(verdict, f"{[m[0] for m in members]} size={image_size} mode={image_mode}")


def _zeros_npz(megabytes: int, rows: int) -> bytes:
    """A deflated NPZ of zeros: about a thousandth of its decoded size on the wire."""
    x = np.zeros((rows, megabytes * 2**20 // (4 * rows)), np.float32)
    return _npz(True, x=x, y=np.zeros(rows, np.int64))


def _long_parquet(rows: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    zeros = pa.array(np.zeros(rows))
    pq.write_table(
        pa.table({"a": zeros, "b": zeros, "label": pa.array(np.zeros(rows, int))}), buffer
    )
    return buffer.getvalue()


@settings(FUZZ, max_examples=12)
@given(
    kind=st.sampled_from(["npz", "images", "parquet"]),
    scale=st.integers(1, 100),
    rows=st.sampled_from([1, 7, 4096]),
)
def test_small_uploads_that_decode_large(
    parser: ParserProcess, kind: str, scale: int, rows: int
) -> None:
    """Bombs of the legal kind: each byte is honest, but the decoded data is ~1000x larger.
    Memory must stay bounded whether they are accepted (streamed) or refused (budget)."""
    if kind == "npz":
        data, form = _zeros_npz(2 * scale, rows), {}
    elif kind == "images":  # tiny images resized up to 1024x1024 RGB: 12 MB each
        tiny = _image(1, 1)
        data = _zip([(f"c{i % 2}/{i}.png", tiny) for i in range(4 * scale)])
        form = {"image_size": "1024x1024", "image_mode": "RGB"}
    else:
        data, form = _long_parquet(200_000 * scale), {}
    verdict = parser.parse(data, f"big.{'zip' if kind == 'images' else kind}", **form)
    assert_handled(verdict, f"{kind} x{scale} ({len(data)} bytes)")
