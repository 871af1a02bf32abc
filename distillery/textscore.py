"""Score texts with a downloaded text student: its `student.onnx` and the `tokenizer.json`
delivered beside it (the teacher's tokenizer), so texts are tokenized exactly as for the
teacher. Needs onnxruntime and tokenizers (`pip install onnxruntime tokenizers`), which the
client package alone does not install."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ScoringUnavailable(RuntimeError):
    """onnxruntime or tokenizers is missing."""


@dataclass(frozen=True)
class Scored:
    text: str
    label: int
    name: str | None
    probabilities: list[float]


def _modules() -> tuple[Any, Any, Any]:
    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ScoringUnavailable(
            f"scoring texts needs {exc.name}: pip install onnxruntime tokenizers"
        ) from exc
    return np, ort, Tokenizer


def class_names(metrics_json: Path | None) -> list[str] | None:
    """The class names a job's metrics.json records (text jobs), if given."""
    if metrics_json is None:
        return None
    text = json.loads(metrics_json.read_text(encoding="utf-8")).get("text") or {}
    names = text.get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else None


def score_texts(
    model: Path,
    tokenizer: Path,
    texts: Sequence[str],
    max_length: int = 128,
    names: list[str] | None = None,
) -> list[Scored]:
    np, ort, Tokenizer = _modules()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    encoder = Tokenizer.from_file(str(tokenizer))
    pad = next(
        (encoder.token_to_id(t) for t in ("[PAD]", "<pad>") if encoder.token_to_id(t) is not None),
        0,
    )
    encoder.enable_padding(pad_id=pad)
    encoder.enable_truncation(max_length=max_length)
    encoded = encoder.encode_batch(list(texts))
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    feed = {
        "input_ids": ids,
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.zeros_like(ids),
    }
    logits = session.run(None, {n: feed[n] for n in inputs})[0]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    scored = []
    for text, row in zip(texts, probabilities, strict=True):
        label = int(row.argmax())
        name = names[label] if names and label < len(names) else None
        scored.append(Scored(text, label, name, [float(p) for p in row]))
    return scored
