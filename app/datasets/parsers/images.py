"""Datasets from a zip of class folders of PNG/JPEG images (`cat/001.png`, `dog/7.jpg`, ...).

Each member is read from the archive counting the bytes that actually come out, refused if it
claims too many pixels before it is decoded (decompression bombs), decoded only as PNG or JPEG,
and resized to one size. Nothing is extracted to disk, and a member whose path could point
outside its folder (`../`, `/etc`, `C:\\`) is refused."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import IO, Any

import numpy as np

from app.datasets.parsers.limits import DatasetLimits, over

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
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


def _member(
    archive: zipfile.ZipFile, name: str, upload_bytes: int, limits: DatasetLimits
) -> IO[bytes]:
    """The member, opened for Pillow to read as it decodes: its encoded bytes are never held
    whole. zipfile never returns more bytes than the entry declares (it stops there, and a
    member that claims less than it holds fails its CRC), so the declared size bounds them."""
    info = archive.getinfo(name)
    if info.compress_size > upload_bytes:
        raise ImageArchiveError(f"member {name!r} claims more bytes than the archive holds")
    # An image of max_image_pixels pixels stored with no compression at all takes about 4
    # bytes a pixel: a member larger than that is not an image of a size we decode.
    limit = min(
        MAX_MEMBER_BYTES,
        MAX_RATIO * max(info.compress_size, 1),
        4 * limits.max_image_pixels + 2**20,
    )
    if info.file_size > limit:
        raise ImageArchiveError(
            f"member {name!r} unpacks to {info.file_size:,} bytes, more than {limit:,}; "
            "refusing a likely zip bomb"
        )
    try:
        return archive.open(info)
    except Exception as exc:  # zipfile's errors on hostile bytes (encryption, bad headers)
        raise ImageArchiveError(f"member {name!r} cannot be read from the archive") from exc


def _check_size(
    name: str, image: Any, mode: str, size: tuple[int, int] | None, limits: DatasetLimits
) -> None:
    """Refuse, before decoding, an image whose pixels or row would be over the limits."""
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise ImageArchiveError(
            over(
                f"member {name!r} is {width}x{height}: pixels",
                width * height,
                limits.max_image_pixels,
                "max_image_pixels",
                "resize it before uploading (a larger image could be a decompression bomb)",
            )
        )
    out_width, out_height = size or (width, height)
    values = out_width * out_height * (1 if mode == "L" else 3)
    if values > limits.max_features:
        raise ImageArchiveError(
            over(
                f"member {name!r} as {mode} {out_width}x{out_height}: values per image",
                values,
                limits.max_features,
                "max_dataset_features",
                "give a smaller image_size",
            )
        )


def _converted(image: Any, mode: str, size: tuple[int, int] | None) -> Any:
    """The image in `mode`, and when it is at least twice `size` reduced by a whole factor
    towards it (a box filter), a strip at a time: converting or resampling it whole would make
    a second full-size copy beside the decoded one."""
    from PIL import Image

    width, height = image.size
    factor = min(width // size[0], height // size[1]) if size is not None else 1
    if factor < 2:
        return image.convert(mode)
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    step = factor * max(1, (1 << 20) // (width * factor))  # whole boxes, ~1 M pixels a strip
    for top in range(0, height, step):
        strip = image.crop((0, top, width, min(height, top + step)))
        out.paste(strip.convert(mode).reduce(factor), (0, top // factor))
    image.close()
    return out


def _decode(
    stream: IO[bytes], name: str, mode: str, size: tuple[int, int] | None, limits: DatasetLimits
) -> np.ndarray:
    from PIL import Image

    try:
        # PNG and JPEG only: Pillow would otherwise pick any of its decoders by content.
        with Image.open(stream, formats=["PNG", "JPEG"]) as image:
            if size is not None and image.format == "JPEG":
                image.draft(mode, size)  # lets libjpeg decode at a reduced scale
            _check_size(name, image, mode, size, limits)
            image.load()
            converted = _converted(image, mode, size)
            if size is not None and converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
    except ImageArchiveError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageArchiveError(f"member {name!r} is a decompression bomb") from exc
    except Exception as exc:  # any decoder error on hostile bytes is the file's fault
        raise ImageArchiveError(f"member {name!r} is not a readable PNG or JPEG image") from exc
    array = np.asarray(converted, dtype=np.float32)
    array *= 1.0 / 255.0  # in place: no second copy of the largest array
    return array[None] if mode == "L" else np.ascontiguousarray(array.transpose(2, 0, 1))


def read_image_archive(
    archive: zipfile.ZipFile,
    upload_bytes: int,
    size: tuple[int, int] | None,
    mode: str,
    sink: Callable[[np.ndarray], None],
    max_bytes: int,
    limits: DatasetLimits,
) -> tuple[tuple[int, ...], np.ndarray, list[str]]:
    """Decode every image and hand each, (C, H, W) float32 in [0, 1], to `sink` in order.

    Returns the feature shape, y (N,) int64 by sorted class name, and the class names.
    `max_bytes` bounds the decoded dataset (resizing tiny images up can multiply it)."""
    if mode not in ("L", "RGB"):
        raise ImageArchiveError(f"image_mode {mode!r}: use L (grayscale) or RGB")
    members = image_members(archive.namelist())
    if not members:
        raise ImageArchiveError("the archive holds no images")
    if len(members) > limits.max_images:
        raise ImageArchiveError(
            over(
                "images in the archive",
                len(members),
                limits.max_images,
                "max_images",
                "split the archive",
            )
        )
    classes = sorted({folder for _, folder in members})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.empty(len(members), dtype=np.int64)
    shape: tuple[int, ...] | None = None
    written = 0
    for row, (name, folder) in enumerate(members):
        with _member(archive, name, upload_bytes, limits) as stream:
            array = _decode(stream, name, mode, size, limits)
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
