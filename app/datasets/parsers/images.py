"""Datasets from a zip of class folders of PNG/JPEG images (`cat/001.png`, `dog/7.jpg`, ...).

Each member is read from the archive counting the bytes that actually come out, refused if it
claims too many pixels before it is decoded (decompression bombs), decoded only as PNG or JPEG,
and resized to one size. Nothing is extracted to disk, and a member whose path could point
outside its folder (`../`, `/etc`, `C:\\`) is refused."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_PIXELS = 25_000_000  # decoded before resizing: at most 100 MB as RGBA
MAX_IMAGES = 250_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_RATIO = 200  # image formats are compressed already; higher is a bomb


class ImageArchiveError(ValueError):
    """A problem with the archive; the message names the member and what to fix."""


def _unsafe(name: str) -> bool:
    return (
        name.startswith("/")
        or "\\" in name
        or ".." in PurePosixPath(name).parts
        or (len(name) > 1 and name[1] == ":")
        or "\x00" in name
    )


def image_members(names: list[str]) -> list[tuple[str, str]]:
    """(member, class folder) for each image; ImageArchiveError if the layout is wrong."""
    found = []
    for name in names:
        if _unsafe(name):
            raise ImageArchiveError(
                f"member {name!r} has an unsafe path (absolute, `..` or a backslash); put each "
                "image in one class folder: <class>/<image>.png"
            )
        if name.endswith("/") or PurePosixPath(name).name.startswith("."):
            continue
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            if parts[0] == "__MACOSX":
                continue
            raise ImageArchiveError(f"member {name!r} is not a PNG or JPEG image")
        if len(parts) != 2:
            raise ImageArchiveError(
                f"member {name!r} is not inside exactly one class folder; lay the archive out "
                "as <class>/<image>.png"
            )
        found.append((name, parts[0]))
    return found


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        parts = [int(p) for p in text.lower().replace(" ", "").split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(1 <= p <= 1024 for p in parts):
        raise ImageArchiveError(f"image_size {text!r}: give WIDTHxHEIGHT, e.g. 28x28 (1..1024)")
    return parts[0], parts[1]


def _member_bytes(archive: zipfile.ZipFile, name: str, upload_bytes: int) -> bytes:
    info = archive.getinfo(name)
    if info.compress_size > upload_bytes:
        raise ImageArchiveError(f"member {name!r} claims more bytes than the archive holds")
    limit = min(MAX_MEMBER_BYTES, MAX_RATIO * max(info.compress_size, 1))
    try:
        with archive.open(info) as stream:
            data = stream.read(limit + 1)  # counted on what comes out, whatever it claims
    except Exception as exc:  # zipfile's errors on hostile bytes (CRC, EOF, zlib, encryption)
        raise ImageArchiveError(f"member {name!r} cannot be read from the archive") from exc
    if len(data) > limit:
        raise ImageArchiveError(
            f"member {name!r} unpacks to more than {limit} bytes; refusing a likely zip bomb"
        )
    return data


def _decode(data: bytes, name: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        # PNG and JPEG only: Pillow would otherwise pick any of its decoders by content.
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageArchiveError(
                    f"member {name!r} is {width}x{height} pixels (over {MAX_IMAGE_PIXELS}); "
                    "refusing a likely decompression bomb"
                )
            if size is not None and image.format == "JPEG":
                image.draft(mode, size)  # lets libjpeg decode at a reduced scale
            image.load()
            converted = image.convert(mode)
            if size is not None and converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
    except ImageArchiveError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageArchiveError(f"member {name!r} is a decompression bomb") from exc
    except Exception as exc:  # any decoder error on hostile bytes is the file's fault
        raise ImageArchiveError(f"member {name!r} is not a readable PNG or JPEG image") from exc
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return array[None] if mode == "L" else array.transpose(2, 0, 1)


def read_image_archive(
    archive: zipfile.ZipFile,
    upload_bytes: int,
    size: tuple[int, int] | None,
    mode: str,
    sink: Callable[[np.ndarray], None],
    max_bytes: int,
) -> tuple[tuple[int, ...], np.ndarray, list[str]]:
    """Decode every image and hand each, (C, H, W) float32 in [0, 1], to `sink` in order.

    Returns the feature shape, y (N,) int64 by sorted class name, and the class names.
    `max_bytes` bounds the decoded dataset (resizing tiny images up can multiply it)."""
    if mode not in ("L", "RGB"):
        raise ImageArchiveError(f"image_mode {mode!r}: use L (grayscale) or RGB")
    members = image_members(archive.namelist())
    if not members:
        raise ImageArchiveError("the archive holds no images")
    if len(members) > MAX_IMAGES:
        raise ImageArchiveError(f"the archive holds {len(members)} images; at most {MAX_IMAGES}")
    classes = sorted({folder for _, folder in members})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.empty(len(members), dtype=np.int64)
    shape: tuple[int, ...] | None = None
    written = 0
    for row, (name, folder) in enumerate(members):
        array = _decode(_member_bytes(archive, name, upload_bytes), name, mode, size)
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise ImageArchiveError(
                f"images differ in size ({name!r} is {array.shape[2]}x{array.shape[1]}, "
                f"others {shape[2]}x{shape[1]}); give image_size to resize them all"
            )
        written += array.nbytes
        if written > max_bytes:
            raise ImageArchiveError(
                f"the images decode to more than {max_bytes} bytes; upload fewer or smaller "
                "images, or a smaller image_size"
            )
        sink(array)
        labels[row] = index[folder]
    assert shape is not None
    return shape, labels, classes
