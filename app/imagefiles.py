"""Datasets from a zip of class folders of PNG/JPEG images (`cat/001.png`, `dog/7.jpg`, ...).

Each member is decoded with Pillow from the archive, refused if it claims too many pixels
(decompression bombs) or is larger than the archive could hold, and resized to one size.
Nothing is extracted to disk, so paths in the archive cannot point anywhere."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import PurePosixPath

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGES = 1_000_000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_RATIO = 200  # image formats are compressed already; higher is a bomb


class ImageArchiveError(ValueError):
    """A problem with the archive; the message names the member and what to fix."""


def image_members(names: list[str]) -> list[tuple[str, str]]:
    """(member, class folder) for each image; ImageArchiveError if the layout is wrong."""
    found = []
    for name in names:
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


def read_image_archive(
    archive: zipfile.ZipFile, upload_bytes: int, size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """x (N, C, H, W) float32 in [0, 1], y (N,) int64 by sorted class name, class names."""
    from PIL import Image

    if mode not in ("L", "RGB"):
        raise ImageArchiveError(f"image_mode {mode!r}: use L (grayscale) or RGB")
    members = image_members(archive.namelist())
    if not members:
        raise ImageArchiveError("the archive holds no images")
    if len(members) > MAX_IMAGES:
        raise ImageArchiveError(f"the archive holds {len(members)} images; at most {MAX_IMAGES}")
    classes = sorted({folder for _, folder in members})
    index = {name: i for i, name in enumerate(classes)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    target = size
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for name, folder in members:
                info = archive.getinfo(name)
                if info.file_size > min(MAX_MEMBER_BYTES, upload_bytes * MAX_RATIO):
                    raise ImageArchiveError(f"member {name!r} unpacks to {info.file_size} bytes")
                try:
                    with Image.open(io.BytesIO(archive.read(name))) as image:
                        image.load()
                        if target is None:
                            target = image.size
                        elif size is None and image.size != target:
                            raise ImageArchiveError(
                                f"images differ in size ({name!r} is {image.size[0]}x"
                                f"{image.size[1]}, others {target[0]}x{target[1]}); give "
                                "image_size to resize them all"
                            )
                        converted = image.convert(mode).resize(target, Image.Resampling.BILINEAR)
                except ImageArchiveError:
                    raise
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise ImageArchiveError(f"member {name!r} is a decompression bomb") from exc
                except Exception as exc:
                    raise ImageArchiveError(f"member {name!r} is not a readable image") from exc
                array = np.asarray(converted, dtype=np.float32) / 255.0
                images.append(array[None] if mode == "L" else array.transpose(2, 0, 1))
                labels.append(index[folder])
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes
