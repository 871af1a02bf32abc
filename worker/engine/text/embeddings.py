"""A text student's first embeddings, from its teacher's (issue 14): the teacher's word-embedding
matrix, read as data (a tensor of model.safetensors through the safetensors library, or an
initializer of model.onnx through onnx: nothing in the upload runs), restricted to the tokens
the student keeps and projected to the student's width by PCA.

The student's row 0 stands for every token its data never showed it (worker/engine/text/
students.py: UNSEEN); it starts as the mean of the teacher's rows."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

# Names transformers gives the word-embedding table (BERT, RoBERTa, ELECTRA, ALBERT, DeBERTa,
# DistilBERT: word_embeddings; ModernBERT: tok_embeddings).
EMBEDDING_SUFFIXES = ("word_embeddings.weight", "tok_embeddings.weight", "embed_tokens.weight")
NOT_WORDS = ("position", "token_type")
MAX_EMBEDDING_VALUES = 512 * 1024**2 // 4  # a 512 MiB float32 table at most


class EmbeddingsNotFound(ValueError):
    """The teacher's word-embedding table cannot be found or read; the student starts random."""


@dataclass(frozen=True)
class TeacherEmbeddings:
    vectors: np.ndarray  # (the model's vocabulary, its width), float32
    tensor: str  # its name in the model file


@dataclass(frozen=True)
class StudentEmbeddings:
    """Rows of a text student's embedding table: UNSEEN, then one per kept token."""

    vectors: np.ndarray  # (kept tokens + 1, the student's width), float32
    tensor: str
    teacher_dim: int
    components: int  # the teacher's principal components the student's columns hold
    explained_variance: float  # of the kept rows, by those components


def _choose(shapes: dict[str, tuple[int, ...]], vocab_size: int) -> str:
    """The word-embedding table: by its name, else the one matrix with a row per token."""
    tables = {
        name: shape
        for name, shape in shapes.items()
        if len(shape) == 2 and shape[0] >= vocab_size and shape[1] >= 2
    }
    named = [n for n in tables if n.endswith(EMBEDDING_SUFFIXES)]
    if len(named) == 1:
        return named[0]
    words = [n for n in tables if not any(part in n for part in NOT_WORDS)]
    if len(words) == 1:
        return words[0]
    raise EmbeddingsNotFound(
        f"no single word-embedding table with a row for each of the {vocab_size:,} tokens "
        f"among the model's matrices ({len(tables)} candidates)"
    )


def _checked(vectors: np.ndarray, name: str) -> np.ndarray:
    if vectors.size > MAX_EMBEDDING_VALUES:
        raise EmbeddingsNotFound(f"{name} holds {vectors.size:,} values, too many to project")
    out = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(out).all():
        raise EmbeddingsNotFound(f"{name} holds values that are not finite")
    return out


def _from_safetensors(path: Path, vocab_size: int) -> TeacherEmbeddings:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as tensors:
        shapes = {str(k): tuple(tensors.get_slice(k).get_shape()) for k in tensors.keys()}
        name = _choose(shapes, vocab_size)
        if int(np.prod(shapes[name])) > MAX_EMBEDDING_VALUES:
            raise EmbeddingsNotFound(f"{name} is {list(shapes[name])}, too large to project")
        table = tensors.get_tensor(name).float().numpy()
    return TeacherEmbeddings(_checked(table, name), name)


def _from_onnx(path: Path, vocab_size: int) -> TeacherEmbeddings:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    initializers = {
        t.name: t for t in model.graph.initializer if t.data_type in floats and not t.external_data
    }
    name = _choose({n: tuple(int(d) for d in t.dims) for n, t in initializers.items()}, vocab_size)
    return TeacherEmbeddings(_checked(numpy_helper.to_array(initializers[name]), name), name)


def read_teacher_embeddings(
    teacher_zip: Path, vocab_size: int, scratch_dir: Path | None = None
) -> TeacherEmbeddings:
    """The word-embedding table of a zipped text teacher (transformers or optimum layout),
    copied out of the zip to a folder in `scratch_dir` and read there."""
    with tempfile.TemporaryDirectory(prefix="teacher-embeddings-", dir=scratch_dir) as scratch:
        try:
            with zipfile.ZipFile(teacher_zip) as archive:
                members = {PurePosixPath(i.filename).name: i for i in archive.infolist()}
                name = next((n for n in ("model.safetensors", "model.onnx") if n in members), None)
                if name is None:
                    raise EmbeddingsNotFound("the teacher has no model.safetensors or model.onnx")
                target = Path(scratch) / name
                with archive.open(members[name]) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
        except zipfile.BadZipFile as exc:
            raise EmbeddingsNotFound("the teacher's zip cannot be read") from exc
        try:
            if name == "model.safetensors":
                return _from_safetensors(target, vocab_size)
            return _from_onnx(target, vocab_size)
        except EmbeddingsNotFound:
            raise
        except Exception as exc:  # a damaged file: the student starts random, and says why
            raise EmbeddingsNotFound(f"{name} cannot be read: {str(exc)[:200]}") from exc


def project_embeddings(
    found: TeacherEmbeddings, kept: tuple[int, ...], dim: int, seed: int
) -> StudentEmbeddings:
    """The kept tokens' rows (and their mean for UNSEEN), centred and projected on their
    `dim` principal components, scaled to unit variance as a fresh nn.Embedding is; the
    student's columns past the teacher's components start random."""
    vectors = found.vectors.astype(np.float64)
    rows = vectors[np.asarray(kept, dtype=np.int64)] if kept else vectors[:0]
    table = np.vstack([vectors.mean(axis=0, keepdims=True), rows])
    centred = table - (rows.mean(axis=0) if len(rows) else 0.0)
    _, singular, components = np.linalg.svd(centred[1:] if len(rows) > 1 else centred, False)
    keep = min(dim, len(components))
    projected = centred @ components[:keep].T
    scale = float(projected.std()) or 1.0
    out = np.random.default_rng(seed).standard_normal((len(table), dim))
    out[:, :keep] = projected / scale
    energy = float((singular**2).sum())
    explained = float((singular[:keep] ** 2).sum() / energy) if energy > 0 else 0.0
    return StudentEmbeddings(
        out.astype(np.float32), found.tensor, vectors.shape[1], keep, explained
    )
