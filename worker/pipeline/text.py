"""Text jobs in the pipeline: the teacher's tokenizer (read from its upload, a data file)
turns the job's text datasets into the engine's token rows, labels given as names become the
teacher's class ids, and the student's vocabulary is the tokens the job's data holds."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from app.datasets.parsers.text import load_texts
from app.jobs.spec import JobSpec
from worker.engine.config import StudentSpec, TextVocabulary
from worker.engine.data import Splits
from worker.engine.teachers.text import TEXT_LENGTH
from worker.engine.text.tokens import TextEncoder, TokenizerRejected, read_config
from worker.pipeline.errors import JobInputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MAX_TOKENIZER_BYTES = 256 * 1024**2
DEFAULT_TEXT_STUDENT: Literal["bilstm"] = "bilstm"
DEFAULT_TEXT_WIDTH = 64
MIN_LENGTH = 4


@dataclass(frozen=True)
class TextSetup:
    encoder: TextEncoder
    tokenizer_json: Path  # delivered beside the student
    class_names: list[str]
    input_names: list[str]
    max_length: int  # the teacher's
    length: int = 0  # the job's rows: tokens per text

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
    )


def with_length(setup: TextSetup, spec: JobSpec, train: Path) -> TextSetup:
    """Tokens per row: the longest training text, at most the student's max_length (128 by
    default) and the teacher's limit."""
    texts, pairs, _ = load_texts(train)
    longest = int(setup.encoder.lengths(texts, pairs).max()) if texts else MIN_LENGTH
    cap = min(spec.student.max_length or TEXT_LENGTH, setup.max_length)
    return TextSetup(
        setup.encoder,
        setup.tokenizer_json,
        setup.class_names,
        setup.input_names,
        setup.max_length,
        max(MIN_LENGTH, min(cap, longest)),
    )


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


def text_student(spec: JobSpec, splits: Splits, setup: TextSetup) -> tuple[StudentSpec, str | None]:
    """The job's text student, with the vocabulary of the rows it learns from; and why, for
    the default one."""
    wanted = spec.student
    default = wanted.sized_from_teacher
    rows = [splits.train.x, *(part.x for part in splits.transfer)]
    seen = np.unique(np.concatenate([r[:, 0][r[:, 1] > 0.5] for r in rows]).astype(np.int64))
    kept = tuple(int(i) for i in seen if 0 <= i < setup.encoder.vocab_size)
    architecture = DEFAULT_TEXT_STUDENT if default else wanted.architecture
    student = StudentSpec(
        architecture=architecture,
        hidden_sizes=tuple(wanted.hidden_sizes or (DEFAULT_TEXT_WIDTH,)),
        dropout=wanted.dropout,
        batch_norm=False,
        channels=(),
        normalize=False,
        embedding_dim=wanted.embedding_dim,
        vocabulary=TextVocabulary(kept, setup.encoder.vocab_size),
    )
    reason = None
    if default:
        reason = (
            f"text teacher: a {DEFAULT_TEXT_STUDENT} (embeddings {wanted.embedding_dim}, hidden "
            f"{DEFAULT_TEXT_WIDTH}) over the {len(kept):,} tokens the job's rows hold, of the "
            f"tokenizer's {setup.encoder.vocab_size:,}"
        )
    return student, reason
