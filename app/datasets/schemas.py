"""The public view of a dataset."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class DatasetPublic(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    created_at: datetime
    filename: str
    format: str
    rows: int
    feature_shape: list[int]
    num_classes: int | None
    labeled: bool
    class_counts: dict[str, int] | None
    class_names: list[str] | None = Field(
        default=None,
        description="Image archives: label i is the i-th class folder. Text datasets whose "
        "labels are names: the names (mapped to the teacher's classes when a job is submitted).",
    )
    modality: Literal["tensor", "text"] = Field(
        default="tensor", description="text: texts the job tokenizes with the teacher's tokenizer."
    )
    sha256: str
    bytes: int
