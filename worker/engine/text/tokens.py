"""Texts as the rows the engine trains on: the teacher's own tokenizer (`tokenizer.json`, read
with `tokenizers`: a data file, no code) turns texts into token ids and an attention mask,
stored as float32 rows shaped (2, L), ids then mask. Token ids are integers far below 2**24,
so float32 holds them exactly, and every part of the engine that moves rows (splits, the
teacher-output cache, transfer sets, batches) works on text rows as it does on tensors; only
the models read them back as integers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Names tokenizers give their special tokens (BERT's, then RoBERTa's / XLM-R's).
SPECIAL_NAMES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
}
MAX_TOKEN_ID = 2**24  # float32 holds every integer below it exactly


class TokenizerRejected(ValueError):
    """The tokenizer files cannot be read or do not fit the model."""


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    unk: int | None
    mask: int | None
    cls: int | None
    sep: int | None

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(
            i for i in (self.pad, self.unk, self.mask, self.cls, self.sep) if i is not None
        )


class TextEncoder:
    """The teacher's tokenizer, encoding to (N, 2, L) float32 rows."""

    def __init__(self, tokenizer_json: Path, config: dict[str, object] | None = None) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:
            raise TokenizerRejected(f"tokenizer.json cannot be read: {str(exc)[:200]}") from exc
        self.vocab_size = int(self.tokenizer.get_vocab_size(with_added_tokens=True))
        if self.vocab_size >= MAX_TOKEN_ID:
            raise TokenizerRejected(f"the vocabulary has {self.vocab_size} tokens, too many")
        self.special = self._special(config or {})
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def _special(self, config: dict[str, object]) -> SpecialTokens:
        found: dict[str, int | None] = {}
        for role, names in SPECIAL_NAMES.items():
            given = config.get(f"{role}_token")
            candidates = ([given] if isinstance(given, str) else []) + list(names)
            found[role] = next(
                (i for i in (self.tokenizer.token_to_id(n) for n in candidates) if i is not None),
                None,
            )
        pad = found["pad"]
        if pad is None:
            raise TokenizerRejected("the tokenizer has no padding token ([PAD] or <pad>)")
        return SpecialTokens(pad, found["unk"], found["mask"], found["cls"], found["sep"])

    def lengths(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        encoded = self._encode(texts, pairs)
        return np.array([len(e.ids) for e in encoded], dtype=np.int64)

    def _encode(self, texts: list[str], pairs: list[str] | None) -> list[Any]:
        if pairs is None:
            return self.tokenizer.encode_batch(texts)
        return self.tokenizer.encode_batch(list(zip(texts, pairs, strict=True)))

    def encode(self, texts: list[str], length: int, pairs: list[str] | None = None) -> np.ndarray:
        """Rows (N, 2, length): token ids (truncated, padded with the pad id) and the mask."""
        rows = np.zeros((len(texts), 2, length), dtype=np.float32)
        rows[:, 0, :] = self.special.pad
        for start in range(0, len(texts), 4096):
            part = self._encode(
                texts[start : start + 4096], None if pairs is None else pairs[start : start + 4096]
            )
            for offset, encoding in enumerate(part):
                ids = encoding.ids[:length]
                if len(encoding.ids) > length and self.special.sep is not None:
                    ids[-1] = self.special.sep  # truncated: keep the closing separator
                rows[start + offset, 0, : len(ids)] = ids
                rows[start + offset, 1, : len(ids)] = 1.0
        return rows


def read_config(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenizerRejected(f"{path.name} is not valid JSON") from exc
    return loaded if isinstance(loaded, dict) else {}


def ids_and_mask(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids and mask back from (N, 2, L) rows, as int64."""
    return rows[:, 0].round().astype(np.int64), (rows[:, 1] > 0.5).astype(np.int64)
