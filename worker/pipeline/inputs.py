"""Stage `inputs`: the job's files from the worker's cache (by sha256), and its splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.datasets.parsers import load_arrays
from app.db import session_scope
from app.jobs.metrics import SplitFractions, SplitPart, SplitReport
from app.jobs.spec import JobSpec, OnnxPhi, VaePhi
from app.models import Blob, Dataset
from app.models import Teacher as TeacherRow
from app.storage import cached_blob
from worker.engine import ArraySplit, Splits, random_split, stratified_split
from worker.pipeline.context import JobRun
from worker.pipeline.errors import JobInputError
from worker.pipeline.text import TextSetup, text_loader, text_setup, with_length

HELD_OUT_FRACTION = 0.15


@dataclass(frozen=True)
class TeacherFile:
    id: str
    path: Path
    output_name: str
    output_kind: str
    details: dict[str, Any] = field(default_factory=dict)  # what inspection found

    @property
    def reads_text(self) -> bool:
        return self.details.get("modality") == "text"


@dataclass(frozen=True)
class JobFiles:
    """Local copies of everything the job names."""

    teachers: list[TeacherFile]
    train: Path
    validation: Path | None = None
    test: Path | None = None
    transfer: list[tuple[str, Path]] = field(default_factory=list)
    mapping: Path | None = None  # cross_domain phi 'onnx'
    source: Path | None = None  # cross_domain phi 'vae'
    target: Path | None = None


@dataclass(frozen=True)
class JobInputs:
    files: JobFiles
    splits: Splits
    split: SplitReport
    text: TextSetup | None = None  # text jobs: the teacher's tokenizer and the rows' length


class _Fetcher:
    def __init__(self, session: Session, cache: Path) -> None:
        self.session, self.cache = session, cache

    def blob(self, blob_id: str) -> Path:
        blob = self.session.get(Blob, blob_id)
        if blob is None:
            raise JobInputError(f"stored bytes {blob_id} are missing", "blob_missing")
        return cached_blob(blob, self.cache)

    def teacher(self, teacher_id: str, what: str = "teacher") -> TeacherRow:
        row = self.session.get(TeacherRow, teacher_id)
        if row is None:
            raise JobInputError(f"{what} {teacher_id} is gone", "unknown_id")
        return row

    def dataset(self, dataset_id: str | None, what: str = "dataset") -> Path | None:
        if dataset_id is None:
            return None
        row = self.session.get(Dataset, dataset_id)
        if row is None:
            raise JobInputError(f"{what} {dataset_id} is gone", "unknown_id")
        return self.blob(row.blob_id)


def fetch(spec: JobSpec, cache: Path) -> JobFiles:
    with session_scope() as session:
        get = _Fetcher(session, cache)
        teachers = [
            TeacherFile(
                row.id,
                get.blob(row.blob_id),
                row.output_name or "",
                row.output_kind or "",
                dict(row.inspection or {}),
            )
            for row in map(get.teacher, spec.teachers.ids)
        ]
        cross = spec.cross_domain
        train = get.dataset(spec.train_dataset_id)
        assert train is not None
        return JobFiles(
            teachers=teachers,
            train=train,
            validation=get.dataset(spec.validation_dataset_id),
            test=get.dataset(spec.test_dataset_id),
            transfer=[
                (i, path)
                for i in spec.transfer_dataset_ids
                if (path := get.dataset(i, "transfer dataset")) is not None
            ],
            mapping=(
                get.blob(get.teacher(cross.mapping_id, "the cross_domain mapping").blob_id)
                if isinstance(cross, OnnxPhi)
                else None
            ),
            source=get.dataset(cross.source_dataset_id) if isinstance(cross, VaePhi) else None,
            target=get.dataset(cross.target_dataset_id) if isinstance(cross, VaePhi) else None,
        )


def _parts(y: np.ndarray | None, rows: int, val: float, test: float, seed: int) -> list[np.ndarray]:
    fractions = (1.0 - val - test, val, test)
    if y is not None:
        return list(stratified_split(y, fractions, seed))
    return list(random_split(rows, fractions, seed))


Loader = Callable[[Path], tuple[np.ndarray, np.ndarray | None]]


def build_splits(
    files: JobFiles, seed: int, load: Loader = load_arrays
) -> tuple[Splits, SplitReport]:
    """Use the given held-out datasets; carve what is missing out of train, stratified."""
    x, y = load(files.train)
    given_val = ArraySplit(*load(files.validation)) if files.validation else None
    given_test = ArraySplit(*load(files.test)) if files.test else None
    val = HELD_OUT_FRACTION if given_val is None else 0.0
    test = HELD_OUT_FRACTION if given_test is None else 0.0
    method, fractions = None, None
    if val or test:
        parts = _parts(y, len(x), val, test, seed)
        method = "stratified by class" if y is not None else "random (unlabeled data)"
        fractions = SplitFractions(train=1.0 - val - test, validation=val, test=test)
    else:
        parts = [np.arange(len(x)), np.array([], dtype=np.int64), np.array([], dtype=np.int64)]

    def part(i: int) -> ArraySplit:
        return ArraySplit(x[parts[i]], y[parts[i]] if y is not None else None)

    splits = Splits(train=part(0), validation=given_val or part(1), test=given_test or part(2))
    report = SplitReport(
        seed=seed,
        method=method,
        fractions=fractions,
        train=SplitPart(rows=len(splits.train.x), source="train_dataset_id"),
        validation=SplitPart(
            rows=len(splits.validation.x),
            source="validation_dataset_id" if given_val else "held out of train",
        ),
        test=SplitPart(
            rows=len(splits.test.x), source="test_dataset_id" if given_test else "held out of train"
        ),
    )
    return splits, report


def inputs(run: JobRun) -> JobInputs:
    run.stage("loading")
    files = fetch(run.spec, run.settings.resolved_cache_dir)
    text: TextSetup | None = None
    load: Loader = load_arrays
    if files.teachers[0].reads_text:
        first = files.teachers[0]
        text = with_length(
            text_setup(first.path, first.details, run.workdir), run.spec, files.train
        )
        load = text_loader(text)
    splits, split = build_splits(files, run.spec.training.seed, load)
    run.update(split=split.model_dump(mode="json", exclude_none=True))
    if len(splits.test.x) == 0 or len(splits.validation.x) == 0:
        raise JobInputError("the held-out split is empty; upload more rows", "split_empty")
    return JobInputs(files=files, splits=splits, split=split, text=text)
