"""The transfer set a job gets when it names none (`"transfer": "auto"`, the default).

KD on the labeled rows alone gives the student no more to learn from than scratch has, and on
a few hundred or thousand rows it usually trails scratch. Rows the teacher labels beyond the
training rows are what make distillation pay (docs/methods.md §2 and the transfer-set tables
in the README), so by default the service synthesizes them from the training split, with
methods suited to the data's kind, sized to the labeled set and capped by a setting:

- images ((C, H, W) or (H, W) rows) and signals (1-D rows whose neighbouring features move
  together) get `shift` and `mixup`;
- tabular rows (anything else) get `mixup` and `noise` at a quarter of each feature's std;
- text rows get `mask`, `swap` and `ngram` (Tang et al.).

`"transfer": null` turns this off; a `transfer` object or `transfer_dataset_ids` are the
user's choice and are kept as given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.jobs.metrics import TransferChoice
from app.jobs.spec import JobSpec, TransferConfig

DataKind = Literal["image", "signal", "tabular", "text"]

# Teacher-labelled rows per labeled row, and the fewest a default set has.
ROWS_PER_LABELED_ROW = 20
MIN_AUTO_ROWS = 10_000
# Signals: the mean correlation of neighbouring features at which 1-D rows count as a signal.
SIGNAL_CORRELATION = 0.5
SIGNAL_MIN_FEATURES = 16
TABULAR_NOISE_SIGMA = 0.25


def data_kind(x: np.ndarray) -> DataKind:
    """What the rows look like: an image, a 1-D signal or a table row."""
    if x.ndim >= 3:  # (N, H, W) or (N, C, H, W), or (N, C, L) channels of a signal
        return "image" if x.ndim >= 4 or min(x.shape[1:]) > 4 else "signal"
    features = x.shape[1] if x.ndim == 2 else 1
    if features < SIGNAL_MIN_FEATURES or len(x) < 3:
        return "tabular"
    sample = np.asarray(x[:2000], dtype=np.float64)
    left, right = sample[:, :-1], sample[:, 1:]
    left = left - left.mean(axis=0)
    right = right - right.mean(axis=0)
    scale = np.sqrt((left**2).sum(axis=0) * (right**2).sum(axis=0))
    moving = scale > 0
    if not moving.any():
        return "tabular"
    correlation = (left * right).sum(axis=0)[moving] / scale[moving]
    return "signal" if float(correlation.mean()) >= SIGNAL_CORRELATION else "tabular"


@dataclass(frozen=True)
class ChosenTransfer:
    """What the job synthesizes (None: nothing) and what the job reports about the choice."""

    config: TransferConfig | None
    choice: TransferChoice


def auto_rows(labeled_rows: int, max_rows: int) -> int:
    """All the rows a default transfer set synthesizes, over all its methods."""
    return max(0, min(max_rows, max(MIN_AUTO_ROWS, ROWS_PER_LABELED_ROW * labeled_rows)))


def choose_transfer(
    spec: JobSpec, x_train: np.ndarray, max_rows: int, text: bool = False
) -> ChosenTransfer:
    if spec.transfer is None:
        return ChosenTransfer(None, TransferChoice(chosen="off", reason="the job asked for none"))
    if isinstance(spec.transfer, TransferConfig):
        given = spec.transfer
        return ChosenTransfer(
            given,
            TransferChoice(
                chosen="given",
                synthesize=list(given.methods),
                rows=given.size * len(given.methods),
                reason="the job's transfer settings",
            ),
        )
    if spec.transfer_dataset_ids:
        reason = "the job names unlabeled transfer datasets, so nothing is synthesized"
        return ChosenTransfer(None, TransferChoice(chosen="auto", reason=reason))
    kind: DataKind = "text" if text else data_kind(x_train)
    methods: list[Literal["mixup", "noise", "shift", "mask", "ngram", "swap"]]
    if kind == "text":
        methods = ["mask", "swap", "ngram"]
    elif kind in ("image", "signal"):
        methods = ["shift", "mixup"]
    else:
        methods = ["mixup", "noise"]
    rows = auto_rows(len(x_train), max_rows)
    if rows < len(methods):
        reason = f"DISTILLERY_AUTO_TRANSFER_MAX_ROWS is {max_rows}: nothing is synthesized"
        return ChosenTransfer(None, TransferChoice(chosen="auto", data_kind=kind, reason=reason))
    config = TransferConfig(
        synthesize=list(methods),
        size=rows // len(methods),
        seed=spec.training.seed,
        noise_sigma=TABULAR_NOISE_SIGMA,
    )
    described = {"image": "image", "signal": "1-D signal", "tabular": "tabular", "text": "text"}[
        kind
    ]
    reason = (
        f"{described} rows: {' and '.join(methods)}, {ROWS_PER_LABELED_ROW} teacher-labelled "
        f"rows per labeled row (at least {MIN_AUTO_ROWS:,}, at most {max_rows:,}); without "
        "rows beyond the labeled ones KD has no more to learn from than scratch"
    )
    return ChosenTransfer(
        config,
        TransferChoice(
            chosen="auto",
            data_kind=kind,
            synthesize=list(methods),
            rows=config.size * len(methods),
            reason=reason,
        ),
    )
