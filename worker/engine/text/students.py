"""Students that read tokens: `bag` (fastText: the mean of the embeddings into an MLP),
`text_cnn` (Kim: convolutions of widths 3, 4 and 5 over the embeddings, max over time),
`bilstm` (Tang et al.: a bidirectional LSTM, max over time, an MLP) and `transformer` (a
small encoder, mean over the tokens).

Each takes the engine's text rows, (N, 2, L) float32 token ids and mask, and maps the
teacher's token ids to its own, smaller vocabulary (the tokens seen in the job's data; every
other id shares one embedding), so that the embedding table does not dominate its size."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TEXT_ARCHITECTURES = ("bag", "text_cnn", "bilstm", "transformer")
KERNELS = (3, 4, 5)
UNSEEN = 0  # the student's id for a teacher token the job's data never showed it


def vocabulary_map(kept: tuple[int, ...], teacher_vocab: int) -> np.ndarray:
    """Teacher id -> student id: kept tokens get 1..K in order, every other id UNSEEN."""
    mapping = np.full(teacher_vocab, UNSEEN, dtype=np.int64)
    mapping[np.asarray(kept, dtype=np.int64)] = np.arange(1, len(kept) + 1)
    return mapping


def _reversal(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the positions of its tokens reversed, then its padding as it was:
    index[b, t] = length_b - 1 - t for t < length_b, else t (its own inverse)."""
    length = mask.sum(1, keepdim=True).long()
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0).expand_as(mask).long()
    return torch.where(positions < length, length - 1 - positions, positions)


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[2]))


class TextStudent(nn.Module):
    vocabulary: torch.Tensor  # a buffer: teacher token id -> the student's

    def __init__(
        self,
        architecture: str,
        kept: tuple[int, ...],
        teacher_vocab: int,
        embedding_dim: int,
        hidden: int,
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if architecture not in TEXT_ARCHITECTURES:
            raise ValueError(f"no text student named {architecture!r}")
        self.architecture = architecture
        self.register_buffer("vocabulary", torch.from_numpy(vocabulary_map(kept, teacher_vocab)))
        self.embedding = nn.Embedding(len(kept) + 1, embedding_dim)
        width = embedding_dim
        if architecture == "text_cnn":
            self.convs = nn.ModuleList(
                nn.Conv1d(embedding_dim, hidden, k, padding=k // 2) for k in KERNELS
            )
            width = hidden * len(KERNELS)
        elif architecture == "bilstm":
            # Two directions run as two LSTMs, the backward one over each row's own tokens
            # reversed, so that padding always comes last: the answer does not depend on how
            # far a batch is padded (as a tokenizer padding to the longest text pads it).
            self.forward_lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
            self.backward_lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
            width = 2 * hidden
        elif architecture == "transformer":
            layer = nn.TransformerEncoderLayer(
                embedding_dim,
                nhead=max(1, embedding_dim // 32),
                dim_feedforward=2 * embedding_dim,
                dropout=dropout,
                batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.positions = nn.Embedding(512, embedding_dim)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def start_embeddings(self, vectors: np.ndarray) -> None:
        """Start from these rows (UNSEEN, then the kept tokens): the teacher's, projected."""
        table = self.embedding.weight
        if tuple(vectors.shape) != tuple(table.shape):
            raise ValueError(f"embeddings {list(vectors.shape)} for a table {list(table.shape)}")
        with torch.no_grad():
            table.copy_(torch.as_tensor(vectors, dtype=table.dtype))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        vocabulary = self.vocabulary
        ids = rows[:, 0].round().long().clamp(0, int(vocabulary.shape[0]) - 1)
        mask = rows[:, 1].unsqueeze(-1)  # (N, L, 1), 1 for tokens, 0 for padding
        embedded = self.embedding(vocabulary[ids]) * mask
        if self.architecture == "bag":
            pooled = embedded.sum(1) / mask.sum(1).clamp(min=1.0)
        elif self.architecture == "text_cnn":
            length = embedded.shape[1]
            channels = embedded.transpose(1, 2)
            maps = [conv(channels)[:, :, :length] for conv in self.convs]
            pooled = torch.cat([(m - (1 - mask.transpose(1, 2)) * 1e4).amax(2) for m in maps], 1)
        elif self.architecture == "bilstm":
            reverse = _reversal(mask[..., 0])
            ahead, _ = self.forward_lstm(embedded)
            behind, _ = self.backward_lstm(_gather_rows(embedded, reverse))
            out = torch.cat([ahead, _gather_rows(behind, reverse)], 2)
            pooled = (out - (1 - mask) * 1e4).amax(1)
        else:
            length = embedded.shape[1]
            positions = self.positions(torch.arange(length, device=rows.device).clamp(max=511))
            encoded = self.encoder(
                embedded + positions * mask, src_key_padding_mask=mask[..., 0] < 0.5
            )
            pooled = (encoded * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits
