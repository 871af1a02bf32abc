"""What one dataset upload may make the API allocate, and the settings that say so.

Every parser checks these before it allocates what they bound (README, "Security"): the API
keeps its memory within about 100 MB of growth for any upload up to DISTILLERY_MAX_UPLOAD_BYTES,
and each refusal names the limit it hit and the setting that holds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

# Dataset.rows is a 32-bit column.
MAX_ROWS = 2**31 - 1


@dataclass(frozen=True)
class DatasetLimits:
    # What an upload may decode to, on disk, as float32 (its canonical form).
    max_decoded_bytes: int = 4 * 1024**3
    # Values in one row (features of a CSV or Parquet row, x[i] of an NPZ, C x H x W of an
    # image): a row is converted whole, so this bounds one conversion's memory.
    max_features: int = 3 * 1024 * 1024
    # Columns of a CSV or Parquet table: a CSV row is a list of Python strings (about 60 bytes
    # a cell) and Parquet keeps a page of each column in memory.
    max_table_columns: int = 100_000
    # Characters of one CSV record, read before csv splits it.
    max_csv_line_bytes: int = 4 * 1024 * 1024
    # Members of an image archive: zipfile holds its whole directory in memory.
    max_images: int = 60_000
    # Pixels of one decoded image, before resizing: Pillow decodes it whole.
    max_image_pixels: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetLimits:
        return cls(
            max_decoded_bytes=settings.max_decoded_bytes,
            max_features=settings.max_dataset_features,
            max_table_columns=settings.max_table_columns,
            max_csv_line_bytes=settings.max_csv_line_bytes,
            max_images=settings.max_images,
            max_image_pixels=settings.max_image_pixels,
        )


def over(what: str, value: int, limit: int, setting: str, advice: str) -> str:
    """The message of a refusal at a limit: what, how much, the limit and its setting."""
    return (
        f"{what}: {value:,}, over the limit of {limit:,} (DISTILLERY_{setting.upper()}); {advice}"
    )
