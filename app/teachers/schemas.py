"""The public view of a teacher."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class TeacherPublic(BaseModel):
    id: str
    object: Literal["teacher"] = "teacher"
    created_at: datetime
    filename: str
    status: Literal["ready", "processing", "invalid"]
    format: str
    sha256: str
    bytes: int
    input_shape: list[int] = Field(description="Input shape without the batch dimension.")
    num_classes: int
    parameters: int
    output_name: str = Field(description="The model output the service distills from.")
    output_kind: Literal["logits", "probabilities"] = Field(
        description="Probabilities are turned into logits with log(p) before softening."
    )
    hint_candidates: list[str] = Field(
        default_factory=list,
        description="Intermediate tensors a FitNets hint can use (ONNX teachers).",
    )
