"""Datasets: NPZ or CSV uploads, checked and stored in a canonical NPZ form."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from sqlalchemy.orm import Session

from app import idempotency
from app.auth import TenantDep
from app.datasets.freed_memory import release_freed_memory
from app.datasets.parsers import DatasetRejected, ParsedDataset, parse_dataset
from app.datasets.parsers.limits import DatasetLimits
from app.datasets.parsers.text import TextColumns
from app.datasets.schemas import DatasetPublic
from app.deps import SessionDep, SettingsDep
from app.errors import PROBLEM_RESPONSES, InvalidInput
from app.filenames import display_filename
from app.idempotency import IdempotencyKeyHeader, request_digest
from app.models import Blob, Dataset, new_id
from app.ownership import owned
from app.pagination import Page, newest_first
from app.settings import Settings
from app.storage import FileDigest, store_file
from app.uploads import received_file

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


DatasetFile = Annotated[
    UploadFile,
    File(
        description="NPZ with `x` (N, ...) and optional integer `y` (N,); CSV or "
        "Parquet with a label column; or a zip of class folders of PNG/JPEG images."
    ),
]
LabelColumnForm = Annotated[
    str | None,
    Form(
        max_length=255,
        description="CSV or Parquet: the column holding integer labels (default `label` if "
        "present; without it the dataset is unlabeled).",
    ),
]
ImageSizeForm = Annotated[
    str | None,
    Form(
        max_length=32, description="Image archives: resize every image to WIDTHxHEIGHT, e.g. 28x28."
    ),
]
TextColumnForm = Annotated[
    str | None,
    Form(
        max_length=255,
        description="Text datasets (CSV, JSONL, Parquet): the column of texts (default `text`; "
        "a CSV or Parquet file with a `text` column, and any JSONL file, is read as text).",
    ),
]
TextPairColumnForm = Annotated[
    str | None,
    Form(max_length=255, description="Text datasets: a second text column (sentence pairs)."),
]
ImageModeForm = Annotated[
    str, Form(max_length=8, description="Image archives: L (grayscale, 1 channel) or RGB (3).")
]


@dataclass(frozen=True)
class _FormOptions:
    label_column: str | None
    image_size: str | None
    image_mode: str
    text_column: str | None = None
    text_pair_column: str | None = None

    @property
    def text(self) -> TextColumns | None:
        if self.text_column is None and self.text_pair_column is None:
            return None
        return TextColumns(self.text_column or "text", self.text_pair_column, self.label_column)


def _parse_and_store(
    session: Session, settings: Settings, received: Path, filename: str, options: _FormOptions
) -> tuple[ParsedDataset, Blob]:
    """Parse the upload into its canonical file and store that; nothing of the parse stays."""
    out_dir = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix="dataset-"))
    try:
        try:
            parsed = parse_dataset(
                received,
                filename,
                out_dir,
                options.label_column,
                options.image_size,
                options.image_mode,
                DatasetLimits.from_settings(settings),
                options.text,
            )
        except DatasetRejected as exc:
            raise InvalidInput(exc.message, field=exc.field, code="dataset_invalid") from exc
        return parsed, store_file(session, parsed.canonical_path, settings.blob_chunk_bytes)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        release_freed_memory()


def _dataset_row(
    dataset_id: str,
    tenant: str,
    filename: str,
    upload: FileDigest,
    parsed: ParsedDataset,
    blob: Blob,
    label_column: str | None,
) -> Dataset:
    counts = parsed.class_counts
    return Dataset(
        id=dataset_id,
        tenant_id=tenant,
        filename=filename,
        format=parsed.format,
        blob_id=blob.id,
        sha256=upload.sha256,
        bytes=upload.bytes,
        rows=parsed.rows,
        feature_shape=list(parsed.feature_shape),
        num_classes=parsed.num_classes,
        labeled=parsed.labeled,
        class_counts=None if counts is None else {str(k): int(v) for k, v in counts.items()},
        label_column=label_column,
        class_names=parsed.class_names,
    )


@router.post("", status_code=201, response_model=DatasetPublic, responses=PROBLEM_RESPONSES)
def upload_dataset(
    response: Response,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    file: DatasetFile,
    label_column: LabelColumnForm = None,
    image_size: ImageSizeForm = None,
    image_mode: ImageModeForm = "L",
    text_column: TextColumnForm = None,
    text_pair_column: TextPairColumnForm = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Dataset:
    filename = display_filename(file.filename, "dataset")
    options = _FormOptions(label_column, image_size, image_mode, text_column, text_pair_column)
    with received_file(file, settings.tmp_dir, settings.blob_chunk_bytes) as received:
        digest = request_digest(
            filename,
            received.sha256,
            label_column,
            image_size,
            image_mode,
            text_column,
            text_pair_column,
        )
        if idempotency_key is not None:
            first = idempotency.find(session, tenant, "datasets", idempotency_key, digest)
            if first is not None:
                response.headers["Idempotent-Replayed"] = "true"
                return owned(session, Dataset, first, tenant, "dataset_id")
        parsed, blob = _parse_and_store(session, settings, received.path, filename, options)
    dataset_id = new_id("ds")
    if idempotency_key is not None:
        try:
            idempotency.claim(session, tenant, "datasets", idempotency_key, digest, dataset_id)
        except idempotency.KeyTaken:
            session.rollback()
            first = idempotency.winner(tenant, "datasets", idempotency_key, digest)
            response.headers["Idempotent-Replayed"] = "true"
            return owned(session, Dataset, first, tenant, "dataset_id")
    dataset = _dataset_row(dataset_id, tenant, filename, received, parsed, blob, label_column)
    session.add(dataset)
    session.flush()
    return dataset


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=PROBLEM_RESPONSES)
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> Dataset:
    return owned(session, Dataset, dataset_id, tenant, "dataset_id")


@router.get("", response_model=Page[DatasetPublic], responses=PROBLEM_RESPONSES)
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    return newest_first(session, Dataset, limit, after, Dataset.tenant_id == tenant)
