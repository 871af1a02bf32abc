"""Text in the engine: token rows from the teacher's tokenizer, Tang-style synthesis, text
students that do not depend on how far a batch is padded, and their ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.support.text import text_task, train_tokenizer
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
