"""Text jobs in the pipeline: the teacher's tokenizer (read from its upload, a data file)
turns the job's text datasets into the engine's token rows, labels given as names become the
teacher's class ids, and the student's vocabulary is the tokens the job's data holds."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from app.datasets.parsers.text import load_texts
from app.jobs.metrics import EmbeddingsReport
from app.jobs.spec import DEFAULT_COMPRESSION, JobSpec
from worker.engine.config import StudentSpec, TextVocabulary
from worker.engine.data import Splits
from worker.engine.students import build_student, count_parameters
from worker.engine.teachers import Teacher
from worker.engine.teachers.text import TEXT_LENGTH
from worker.engine.text.embeddings import (
    EmbeddingsNotFound,
    project_embeddings,
    read_teacher_embeddings,
)
from worker.engine.text.tokens import TextEncoder, TokenizerRejected, read_config
from worker.pipeline.errors import JobInputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MAX_TOKENIZER_BYTES = 256 * 1024**2
DEFAULT_TEXT_STUDENT: Literal["bilstm"] = "bilstm"
# The default student's widths (embeddings and hidden units alike), widest first: the widest
# with at most 1/DEFAULT_COMPRESSION of the teacher's parameters is chosen.
DEFAULT_TEXT_WIDTHS = (64, 48, 32, 24, 16)
MIN_LENGTH = 4


@dataclass(frozen=True)
class TextSetup:
    encoder: TextEncoder
    tokenizer_json: Path  # delivered beside the student
    class_names: list[str]
    input_names: list[str]
    max_length: int  # the teacher's
    length: int = 0  # the job's rows: tokens per text
    teacher_zip: Path | None = None  # the teacher's upload, for its word embeddings

    @property
    def token_types(self) -> bool:
        return "token_type_ids" in self.input_names


def unpack_tokenizer(teacher_zip: Path, folder: Path) -> Path:
    """tokenizer.json (and tokenizer_config.json) out of the teacher's zip, bounded."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(teacher_zip) as archive:
        for info in archive.infolist():
            name = PurePosixPath(info.filename).name
            if name in TOKENIZER_FILES and not info.is_dir():
                if info.file_size > MAX_TOKENIZER_BYTES:
                    raise JobInputError(f"the teacher's {name} is over 256 MiB", "teacher_invalid")
                (folder / name).write_bytes(archive.read(info))
    return folder / "tokenizer.json"


def text_setup(teacher_zip: Path, details: dict[str, object], workdir: Path) -> TextSetup:
    tokenizer = unpack_tokenizer(teacher_zip, workdir / "tokenizer")
    try:
        encoder = TextEncoder(tokenizer, read_config(tokenizer.parent / "tokenizer_config.json"))
    except TokenizerRejected as exc:
        raise JobInputError(str(exc), "teacher_invalid") from exc
    names = details.get("class_names") or []
    inputs = details.get("input_names") or ["input_ids", "attention_mask"]
    max_length = details.get("max_length") or TEXT_LENGTH
    return TextSetup(
        encoder=encoder,
        tokenizer_json=tokenizer,
        class_names=[str(n) for n in names] if isinstance(names, list) else [],
        input_names=[str(n) for n in inputs] if isinstance(inputs, list) else [],
        max_length=int(max_length) if isinstance(max_length, int) else TEXT_LENGTH,
        teacher_zip=teacher_zip,
    )


def with_length(setup: TextSetup, spec: JobSpec, train: Path) -> TextSetup:
    """Tokens per row: the longest training text, at most the student's max_length (128 by
    default) and the teacher's limit."""
    texts, pairs, _ = load_texts(train)
    longest = int(setup.encoder.lengths(texts, pairs).max()) if texts else MIN_LENGTH
    cap = min(spec.student.max_length or TEXT_LENGTH, setup.max_length)
    return replace(setup, length=max(MIN_LENGTH, min(cap, longest)))


def _labels(labels: list[str] | None, names: list[str], where: str) -> np.ndarray | None:
    if labels is None:
        return None
    if all(label.isdigit() for label in labels):
        return np.array([int(label) for label in labels], dtype=np.int64)
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise JobInputError(
            f"{where} has labels the teacher does not know: {unknown[:10]}", "labels_unknown"
        )
    return np.array([index[label] for label in labels], dtype=np.int64)


def text_loader(setup: TextSetup) -> Callable[[Path], tuple[np.ndarray, np.ndarray | None]]:
    def load(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        texts, pairs, labels = load_texts(path)
        rows = setup.encoder.encode(texts, setup.length, pairs)
        return rows, _labels(labels, setup.class_names, "a text dataset")

    return load


def _sized(student: StudentSpec, teacher: Teacher, embedding_dim: int) -> tuple[StudentSpec, int]:
    """The widest default student (embeddings and hidden units of one width, at most the
    spec's embedding_dim) with at most 1/DEFAULT_COMPRESSION of the teacher's parameters, as
    the default tensor student is sized; the narrowest when none is that small."""
    budget = max(1, teacher.parameters // DEFAULT_COMPRESSION)
    widths = sorted({min(w, embedding_dim) for w in DEFAULT_TEXT_WIDTHS}, reverse=True)
    for width in widths:
        sized = replace(student, hidden_sizes=(width,), embedding_dim=width)
        parameters = count_parameters(
            build_student(sized, teacher.input_shape, teacher.num_classes)
        )
        if parameters <= budget:
            break
    return sized, parameters


def text_student(
    spec: JobSpec, splits: Splits, setup: TextSetup, teacher: Teacher
) -> tuple[StudentSpec, str | None]:
    """The job's text student, with the vocabulary of the rows it learns from (and, for the
    default one, sized from the teacher); and why, for the default one."""
    wanted = spec.student
    default = wanted.sized_from_teacher
    rows = [splits.train.x, *(part.x for part in splits.transfer)]
    seen = np.unique(np.concatenate([r[:, 0][r[:, 1] > 0.5] for r in rows]).astype(np.int64))
    kept = tuple(int(i) for i in seen if 0 <= i < setup.encoder.vocab_size)
    student = StudentSpec(
        architecture=DEFAULT_TEXT_STUDENT if default else wanted.architecture,
        hidden_sizes=tuple(wanted.hidden_sizes or (DEFAULT_TEXT_WIDTHS[0],)),
        dropout=wanted.dropout,
        batch_norm=False,
        channels=(),
        normalize=False,
        embedding_dim=wanted.embedding_dim,
        vocabulary=TextVocabulary(kept, setup.encoder.vocab_size),
    )
    if not default:
        return student, None
    student, parameters = _sized(student, teacher, wanted.embedding_dim)
    width = student.embedding_dim
    return student, (
        f"text teacher: a {DEFAULT_TEXT_STUDENT} (embeddings {width}, hidden {width}) over the "
        f"{len(kept):,} tokens the job's rows hold, of the tokenizer's "
        f"{setup.encoder.vocab_size:,}; sized from the teacher ({teacher.parameters:,} "
        f"parameters): {parameters:,} parameters, {teacher.parameters / parameters:.1f}x fewer"
    )


def with_embeddings(
    spec: JobSpec, student: StudentSpec, setup: TextSetup
) -> tuple[StudentSpec, EmbeddingsReport]:
    """The student's embeddings from the teacher's (init_embeddings "teacher", or null, the
    default), read in this worker as data; a teacher whose table cannot be found or read
    leaves them random, and the report says why."""
    dim, kept = student.embedding_dim, student.vocabulary.kept if student.vocabulary else ()
    if spec.student.init_embeddings == "random" or setup.teacher_zip is None:
        return student, EmbeddingsReport(
            source="random", student_dim=dim, tokens=0, reason="init_embeddings is random"
        )
    try:
        # Copied out of the zip into the job's folder (removed with it).
        scratch = setup.tokenizer_json.parent
        found = read_teacher_embeddings(setup.teacher_zip, setup.encoder.vocab_size, scratch)
    except EmbeddingsNotFound as exc:
        return student, EmbeddingsReport(
            source="random", student_dim=dim, tokens=0, reason=str(exc)
        )
    made = project_embeddings(found, kept, dim, spec.training.seed)
    reason = (
        f"the teacher's {found.tensor} ({found.vectors.shape[1]} wide), the {len(kept):,} "
        f"tokens the student keeps, projected on their {made.components} principal components "
        f"({made.explained_variance:.0%} of their variance)"
    )
    return replace(student, embeddings=made), EmbeddingsReport(
        source="teacher",
        tensor=found.tensor,
        teacher_dim=made.teacher_dim,
        student_dim=dim,
        tokens=len(kept),
        explained_variance=made.explained_variance,
        reason=reason,
    )
