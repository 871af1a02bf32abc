"""Text in the engine: token rows from the teacher's tokenizer, Tang-style synthesis, text
students that do not depend on how far a batch is padded, their ONNX, and their embeddings
started from the teacher's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.support import engine as support
from tests.support.text import (
    TextTeacherFiles,
    export_onnx_teacher,
    text_task,
    train_bert_teacher,
    train_tokenizer,
    zip_folder,
)
from worker.engine.config import TextVocabulary
from worker.engine.text.embeddings import (
    EmbeddingsNotFound,
    project_embeddings,
    read_teacher_embeddings,
)
from worker.engine.text.export import export_text_onnx, text_feeds
from worker.engine.text.students import TEXT_ARCHITECTURES, TextStudent
from worker.engine.text.synthesis import synthesize_text
from worker.engine.text.tokens import TextEncoder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> TextEncoder:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(text_task(300, 0).texts).save(str(path))
    return TextEncoder(path)


def test_texts_become_token_rows(encoder: TextEncoder) -> None:
    rows = encoder.encode(["the soup was not bad", "the film was good"], 12)
    assert rows.shape == (2, 2, 12) and rows.dtype == np.float32
    ids, mask = rows[:, 0], rows[:, 1]
    assert ids[0, 0] == encoder.special.cls and mask[0].sum() == 7  # [CLS] 5 words [SEP]
    assert (ids[mask == 0] == encoder.special.pad).all()
    cut = encoder.encode(["the soup was not bad"], 4)
    assert cut[0, 0, -1] == encoder.special.sep  # truncated rows keep their separator
    assert list(encoder.lengths(["the soup was not bad"])) == [7]


@pytest.mark.parametrize("method", ["mask", "swap", "ngram"])
def test_synthesis_is_seeded_and_keeps_special_tokens(encoder: TextEncoder, method: str) -> None:
    rows = encoder.encode(text_task(200, 1).texts, 24)
    made = synthesize_text(rows, method, 500, 3, encoder.special)
    again = synthesize_text(rows, method, 500, 3, encoder.special)
    assert made.shape == (500, 2, 24) and np.array_equal(made, again)
    assert (made[:, 0, 0] == encoder.special.cls).all()
    ids, mask = made[:, 0], made[:, 1]
    assert (ids[mask == 0] == encoder.special.pad).all()
    base = rows[np.random.default_rng(3).integers(0, len(rows), 500)]
    changed = (made != base).any(axis=(1, 2)).mean()
    assert 0.05 < changed < 1.0, changed
    if method == "mask":
        assert (ids == encoder.special.mask).any()


@pytest.mark.parametrize("architecture", TEXT_ARCHITECTURES)
def test_students_ignore_padding_and_export_to_onnx(
    encoder: TextEncoder, architecture: str, tmp_path: Path
) -> None:
    texts = text_task(40, 2).texts
    rows = encoder.encode(texts, 20)
    kept = tuple(sorted(set(rows[:, 0].astype(int).ravel().tolist()))[:-5])  # some unseen
    torch.manual_seed(0)
    student = TextStudent(architecture, kept, encoder.vocab_size, 32, 16, 4).eval()
    with torch.no_grad():
        short = student(torch.from_numpy(rows))
        long = student(torch.from_numpy(encoder.encode(texts, 40)))
    assert float((short - long).abs().max()) < 1e-5
    exported = export_text_onnx(student, tmp_path / "s.onnx", rows, token_type_ids=True)
    assert exported.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    got = session.run(None, text_feeds(encoder.encode(texts[:3], 33), names))[0]
    assert got.shape == (3, 4) and np.allclose(got, short.numpy()[:3], atol=1e-4)


@pytest.fixture(scope="module")
def untrained_bert(tmp_path_factory: pytest.TempPathFactory) -> TextTeacherFiles:
    """A tiny BERT as save_pretrained writes it, its weights as built (no training needed)."""
    folder = tmp_path_factory.mktemp("bert") / "model"
    return train_bert_teacher(folder, text_task(300, 0), text_task(20, 1), epochs=0)


def _distances(rows: np.ndarray) -> np.ndarray:
    apart = np.linalg.norm(rows[:, None] - rows[None], axis=2)
    return apart[~np.eye(len(rows), dtype=bool)]


def test_the_teachers_word_embeddings_are_read_and_projected(
    untrained_bert: TextTeacherFiles, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    name = "bert.embeddings.word_embeddings.weight"
    table = load_file(str(untrained_bert.folder / "model.safetensors"))[name]
    vocab = TextEncoder(untrained_bert.folder / "tokenizer.json").vocab_size
    found = read_teacher_embeddings(untrained_bert.zip, vocab)
    assert found.tensor == name and np.array_equal(found.vectors, table)
    onnx_zip = export_onnx_teacher(untrained_bert, tmp_path / "onnx-model")
    from_onnx = read_teacher_embeddings(onnx_zip, vocab)  # an initializer of model.onnx
    assert "word_embeddings" in from_onnx.tensor and np.allclose(from_onnx.vectors, table)

    kept = tuple(range(5, vocab))  # more tokens than the teacher is wide
    whole = project_embeddings(found, kept, table.shape[1], seed=0)
    assert whole.vectors.shape == (len(kept) + 1, table.shape[1])
    # All of the teacher's components: the kept rows keep their distances, up to one scale.
    ratio = _distances(whole.vectors[1:]) / _distances(table[list(kept)])
    assert np.allclose(ratio, ratio.mean(), rtol=1e-4) and whole.explained_variance > 0.999
    narrow = project_embeddings(found, kept, 8, seed=0)
    assert narrow.vectors.shape == (len(kept) + 1, 8)
    assert 0.0 < narrow.explained_variance < 0.5 and abs(narrow.vectors.std() - 1.0) < 0.05
    wide = project_embeddings(found, kept, table.shape[1] + 16, seed=0)
    assert np.allclose(wide.vectors[:, : table.shape[1]], whole.vectors, atol=1e-5)

    with pytest.raises(EmbeddingsNotFound, match="model.safetensors or model.onnx"):
        read_teacher_embeddings(
            zip_folder(untrained_bert.folder, tmp_path / "bare.zip", skip=("model.safetensors",)),
            vocab,
        )


def test_the_student_starts_from_them_and_its_scratch_baseline_does_not(
    untrained_bert: TextTeacherFiles,
) -> None:
    from worker.engine import ArraySplit, Splits, load_teacher

    teacher = load_teacher(untrained_bert.zip)
    encoder = TextEncoder(untrained_bert.folder / "tokenizer.json")
    task = text_task(64, 5)
    rows = encoder.encode(task.texts, 16)
    labels = np.array(task.labels)
    kept = tuple(sorted(set(rows[:, 0][rows[:, 1] > 0].astype(int).tolist())))
    made = project_embeddings(
        read_teacher_embeddings(untrained_bert.zip, encoder.vocab_size), kept, 16, 0
    )
    student = replace(
        support.student("bag", hidden_sizes=[16]),
        embedding_dim=16,
        normalize=False,
        vocabulary=TextVocabulary(kept, encoder.vocab_size),
        embeddings=made,
    )
    split = ArraySplit(rows, labels)
    outcome = support.kd(
        support.config(student, hp=support.training(epochs=1, learning_rate=1e-9)),
        teacher,
        Splits(split, split, split),
    )
    assert isinstance(outcome.student, TextStudent) and outcome.scratch_student is not None
    started = outcome.student.embedding.weight.detach().numpy()
    assert np.allclose(started, made.vectors, atol=1e-5)
    assert not np.allclose(
        outcome.scratch_student.embedding.weight.detach().numpy(), made.vectors, atol=0.1
    )
