"""The public view of a teacher."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class TeacherError(BaseModel):
    code: str
    message: str


class TeacherPublic(BaseModel):
    """An uploaded model. A worker inspects it: until then it is `processing` and what it is
    (format, shapes, classes) is null; then `ready`, or `invalid` with `error`."""

    id: str
    object: Literal["teacher"] = "teacher"
    created_at: datetime
    filename: str
    status: Literal["ready", "processing", "invalid"]
    error: TeacherError | None = Field(
        default=None, description="Why the upload cannot serve as a teacher (status invalid)."
    )
    format: str | None
    sha256: str
    bytes: int
    input_shape: list[int] | None = Field(description="Input shape without the batch dimension.")
    num_classes: int | None
    parameters: int | None
    output_name: str | None = Field(description="The model output the service distills from.")
    output_kind: Literal["logits", "probabilities"] | None = Field(
        description="Probabilities are turned into logits with log(p) before softening."
    )
    hint_candidates: list[str] = Field(
        default_factory=list,
        description="Intermediate tensors a FitNets hint can use (ONNX teachers).",
    )
    modality: Literal["tensor", "text"] | None = Field(
        default=None, description="text: a text classifier (a zip of a model folder)."
    )
    class_names: list[str] | None = Field(
        default=None, description="Text teachers: the classes, in class-id order (id2label)."
    )
    input_names: list[str] | None = Field(
        default=None, description="Text teachers: input_ids, attention_mask (token_type_ids)."
    )
    vocab_size: int | None = Field(default=None, description="Text teachers: the tokenizer's.")
    max_length: int | None = Field(
        default=None, description="Text teachers: the longest sequence the model takes."
    )
